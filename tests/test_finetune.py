"""Fine-tuning: run folders as checkpoints, replay of the initial model's data, the forgetting
report."""

import json
import os
import shutil

import pytest

from mmllm.data.sources import JsonlSource, build_source
from mmllm.data.synthetic import export_jsonl
from mmllm.errors import CheckpointError, ConfigError, InputError
from mmllm.eval.run import HeldOutScorer
from mmllm.train import forgetting
from mmllm.train.replay import (
    TRAINING_DATA,
    TrainingData,
    plan_replay,
    read_training_data,
    with_replay,
    write_training_data,
)
from mmllm.train.trainer import train
from mmllm.weights.checkpoint import resolve_checkpoint
from tests.test_train import small_run


@pytest.fixture
def run_folder(tiny_checkpoint, tmp_path):
    """A training run's folder as ``mmllm train --out RUN`` leaves it."""
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, run / "checkpoint")
    (run / "metrics.jsonl").write_text("")
    return run


def test_a_run_folder_is_accepted_wherever_a_checkpoint_is(run_folder, tiny_checkpoint, tmp_path):
    assert resolve_checkpoint(tiny_checkpoint) == tiny_checkpoint
    assert resolve_checkpoint(run_folder) == run_folder / "checkpoint"
    assert resolve_checkpoint(str(run_folder)) == run_folder / "checkpoint"
    assert resolve_checkpoint("mmllm-tiny").name == "mmllm-tiny"
    # a recipe's run: stages in sub-folders, the latest one saved wins
    recipe = tmp_path / "recipe"
    for i, stage in enumerate(("stage1", "stage2")):
        shutil.copytree(tiny_checkpoint, recipe / stage / "checkpoint")
        os.utime(recipe / stage / "checkpoint" / "config.json", (1e9 + i, 1e9 + i))
    assert resolve_checkpoint(recipe) == recipe / "stage2" / "checkpoint"


def test_a_folder_without_a_checkpoint_says_where_it_looked(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no config\.json in it, nor in .*checkpoint"):
        resolve_checkpoint(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="mmllm-tiny"):  # lists the shipped names
        resolve_checkpoint("no-such-model")


def test_eval_and_load_take_a_run_folder(run_folder):
    import subprocess
    import sys

    import mmllm

    assert mmllm.load(run_folder).caption(_picture()) is not None
    result = subprocess.run(
        [sys.executable, "-m", "mmllm.cli", "eval", "--checkpoint", str(run_folder), "--n", "4"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "| overall |" in result.stdout


def _picture():
    import numpy as np

    return np.zeros((32, 32, 3), dtype=np.uint8)


def test_replay_plan_takes_what_can_be_had_and_names_the_rest(tmp_path):
    data = tmp_path / "mine.jsonl"
    export_jsonl(tmp_path, n=4, seed=0)  # writes data.jsonl
    (tmp_path / "data.jsonl").rename(data)
    record = TrainingData(
        f"synthetic:train@0.5+{data}@0.3+gone/train.jsonl@0.2",
        ("synthetic:heldout",),
        {"gone/train.jsonl": "mmllm data tuxpaint --out gone"},
    )
    plan = plan_replay(record)
    assert [s for s, _ in plan.parts] == ["synthetic:train", str(data)]
    assert sum(w for _, w in plan.parts) == pytest.approx(1.0)
    assert plan.parts[0][1] == pytest.approx(0.625)
    assert plan.missing == (
        ("gone/train.jsonl", pytest.approx(0.2), record.make["gone/train.jsonl"]),
    )
    text = plan.describe()
    assert "cannot replay gone/train.jsonl" in text and "mmllm data tuxpaint" in text


def test_with_replay_draws_the_stated_share(tmp_path):
    export_jsonl(tmp_path, n=10, seed=0)
    mine = JsonlSource(tmp_path / "data.jsonl")
    plan = plan_replay(TrainingData("synthetic:train"))
    mixed = with_replay(mine, plan, 0.3, seed=0, image_size=32)
    ids = {id(r) for r in mine.records}
    replayed = sum(id(mixed[k]) not in ids for k in range(400))
    assert 0.22 < replayed / 400 < 0.38
    assert with_replay(mine, plan, 0.0, seed=0, image_size=32) is mine
    with pytest.raises(ConfigError):
        with_replay(mine, plan, 1.0, seed=0, image_size=32)


def test_training_data_round_trip_and_bad_file(tmp_path):
    record = TrainingData("synthetic:train", ("synthetic:heldout",), {"a": "b"})
    write_training_data(tmp_path, record)
    assert read_training_data(tmp_path) == record
    assert read_training_data(tmp_path / "nowhere") is None
    (tmp_path / TRAINING_DATA).write_text("[1, 2]")
    with pytest.raises(ConfigError, match="training-data record"):
        read_training_data(tmp_path)


def test_report_marks_real_drops_only():
    before = {"s": {"image": {"accuracy": 0.95, "n": 400}, "audio": {"accuracy": 0.9, "n": 20}}}
    after = {"s": {"image": {"accuracy": 0.80, "n": 400}, "audio": {"accuracy": 0.85, "n": 20}}}
    rows = forgetting.report(before, after)
    dropped = {r["skill"]: r["dropped"] for r in rows}
    assert dropped == {"image": True, "audio": False}  # 5 points of 20 questions: noise
    text = forgetting.markdown(rows)
    assert "DROPPED: image questions on s fell 15.0 points, 95.0% -> 80.0%." in text
    same = forgetting.report(before, before)
    assert forgetting.verdict(same)[0].startswith("No skill dropped")


def test_fine_tune_replays_and_reports_forgetting(tmp_path):
    scorer = HeldOutScorer()
    base = train(small_run(tmp_path / "base", heldout="synthetic:heldout", eval_samples=4), scorer)
    assert read_training_data(base) == TrainingData("synthetic:train", ("synthetic:heldout",))
    export_jsonl(tmp_path / "mine", n=12, seed=3)
    mine = str(tmp_path / "mine" / "data.jsonl")
    run = tmp_path / "ft"
    folder = train(
        small_run(run, init=str(tmp_path / "base"), data=mine, model={}, forgetting_samples=16),
        scorer,
    )
    learnt = read_training_data(folder)
    assert learnt.data == f"{mine}@0.5+synthetic:train@0.5"
    assert learnt.heldout == ("synthetic:heldout",)
    report = json.loads((run / forgetting.REPORT_JSON).read_text())
    assert report["replay"] == 0.5 and report["steps"] == 6
    assert {r["set"] for r in report["rows"]} == {"synthetic:heldout"}
    assert {"image", "audio", "overall"} <= {r["skill"] for r in report["rows"]}
    metrics = [json.loads(line) for line in (tmp_path / "base" / "metrics.jsonl").open()]
    assert any("eval" in row for row in metrics)  # the scorer scored the held-out set
    summary = (run / forgetting.SUMMARY_MD).read_text()
    assert "| held-out set | skill | before | after |" in summary
    assert summary.startswith((folder / "README.md").read_text())
    assert (run / forgetting.PLOT_PNG).stat().st_size > 1000
    # the same without replay: trained on the new data alone, and it says so
    folder = train(
        small_run(
            tmp_path / "ft0", init=str(base), data=mine, model={}, replay=0.0, forgetting_samples=0
        ),
        scorer,
    )
    assert read_training_data(folder).data == mine
    assert not (tmp_path / "ft0" / forgetting.REPORT_JSON).exists()


def test_replay_without_init_is_refused(tmp_path):
    with pytest.raises(InputError, match="--init"):
        train(small_run(tmp_path, replay=0.5))


def test_build_source_mixture_is_unchanged_by_the_split():
    mix = build_source("synthetic:train@0.65+synthetic:heldout@0.35", seed=0, image_size=32)
    assert [round(x, 6) for x in mix.cumulative] == [0.65, 1.0]


def test_without_a_scorer_training_measures_no_held_out_set(tmp_path):
    train(small_run(tmp_path / "run", heldout="synthetic:heldout", eval_samples=4))
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert metrics and not any("eval" in row for row in metrics)
