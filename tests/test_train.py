"""Training: exact resume, torchrun DDP on CPU, the stage rule, the time budget."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from mmllm import MultimodalLM
from mmllm.train.optim import lr_at
from mmllm.train.stages import set_trainable
from mmllm.train.trainer import TrainConfig, train
from mmllm.weights.checkpoint import load_model
from tests.conftest import tiny_config


def small_run(out, **overrides) -> TrainConfig:
    values = dict(
        out=str(out),
        model=tiny_config(vocab_size=320).to_dict(),
        steps=6,
        batch_size=4,
        warmup=2,
        lr=3e-3,
        eval_every=1000,
        save_every=1000,
        log_every=1,
        heldout=None,
        num_workers=0,
        tokenizer_samples=200,
        max_len=48,
    )
    values.update(overrides)
    return TrainConfig(**values)


def weights(folder):
    return load_file(folder / "model.safetensors")


def test_resume_gives_identical_weights(tmp_path):
    straight = train(small_run(tmp_path / "a"))
    train(small_run(tmp_path / "b", stop_after=3))
    resumed = train(small_run(tmp_path / "b"))
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (tmp_path / "b/metrics.jsonl").open()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    # each call logs what its loop's clock left out (set-up, last evaluation, save)
    overheads = [r for r in rows if "overhead_s" in r]
    assert [r["step"] for r in overheads] == [3, 6] and all(r["overhead_s"] >= 0 for r in overheads)


def test_training_changes_weights_and_lowers_loss(tmp_path):
    train(small_run(tmp_path, steps=30))
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").open()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert (tmp_path / "metrics.png").stat().st_size > 1000


def test_checkpoint_of_a_run_loads_as_a_model(tmp_path):
    folder = train(small_run(tmp_path, steps=2))
    assert isinstance(load_model(folder), MultimodalLM)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _child_errors(stderr: str) -> str:
    """What the ranks wrote before torchrun's own summary (warnings left out): their errors,
    and with ``PYTHONFAULTHANDLER`` the Python stack of a rank that aborted."""
    ranks = stderr.split("Traceback (most recent call last):\n  File", 1)[0]
    lines = [x for x in ranks.splitlines() if "Warning" not in x and "warn(" not in x]
    return "\n".join(lines[-60:]) + "\n...\n" + stderr[-800:]


@pytest.mark.parametrize(
    "overrides",
    [
        {"steps": 3},
        # both ranks take rank 0's fitted step count, or they would fall out of step
        {"steps": 100_000, "max_minutes": 0.15, "fit_to_time": True, "log_every": 10},
        # the patch head is synchronised too; the attend loss reads cross-attention in DDP
        {"steps": 3, "patch_weight": 1.0, "attend_weight": 1.0},
    ],
    ids=["plain", "fit-to-time", "patch-and-attend-loss"],
)
def test_torchrun_two_processes_keep_identical_weights(tmp_path, overrides):
    config = small_run(tmp_path / "ddp", **overrides)
    config_file = tmp_path / "run.json"
    config_file.write_text(json.dumps(config.__dict__))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "-m",
        "mmllm.cli",
        "train",
        "--config",
        str(config_file),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, _child_errors(result.stderr)
    rows = [json.loads(x) for x in (tmp_path / "ddp/metrics.jsonl").open()]
    checksums = [r["replica_checksums"] for r in rows if "replica_checksums" in r]
    assert len(checksums) == 1 and len(checksums[0]) == 2
    assert checksums[0][0] == checksums[0][1]
    fitted = [r["fitted_steps"] for r in rows if "fitted_steps" in r]
    assert len(fitted) == (1 if config.fit_to_time else 0)
    if fitted:
        assert fitted[0] < 100_000 and [r for r in rows if "loss" in r][-1]["step"] <= fitted[0]


def test_align_stage_trains_only_projectors_and_cross_attention():
    model = MultimodalLM(tiny_config())
    names = set_trainable(model, "align")
    assert names and all(
        n.startswith(("image_projector", "audio_projector", "media_packer")) or ".cross_attn" in n
        for n in names
    )
    assert not model.decoder.embed_tokens.weight.requires_grad
    assert not any(p.requires_grad for p in model.image_encoder.parameters())


def test_decoder_stage_freezes_the_encoders_projectors_and_packing():
    model = MultimodalLM(tiny_config())
    names = set_trainable(model, "decoder")
    media = (model.image_encoder, model.audio_encoder, model.image_projector, model.media_packer)
    assert not any(p.requires_grad for part in media for p in part.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())  # cross-attention too
    assert len(names) == sum(1 for _ in model.decoder.named_parameters())


def test_unknown_stage_is_an_error():
    with pytest.raises(ValueError, match="unknown stage"):
        set_trainable(MultimodalLM(tiny_config()), "everything")


def test_learning_rate_schedule_warms_up_then_decays():
    cfg = TrainConfig(steps=100, warmup=10, lr=1.0, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)
    assert lr_at(50, cfg) < lr_at(20, cfg)


def test_time_budget_ends_with_a_loadable_checkpoint(tmp_path):
    folder = train(small_run(tmp_path, steps=1000, max_minutes=0.0))
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").open()]
    assert rows[-1]["step"] == 1  # stopped after the first step
    assert load_model(folder) is not None


def test_fit_to_time_ends_the_schedule_inside_the_budget(tmp_path, monkeypatch):
    import mmllm.train.trainer as trainer

    clock = {"now": 1000.0}  # a fake clock: every step takes 1 s, the budget is 60 s

    def tick():
        clock["now"] += 0.5  # read twice per step
        return clock["now"]

    monkeypatch.setattr(trainer.time, "time", tick)
    cfg = small_run(tmp_path, steps=10_000, max_minutes=1.0, fit_to_time=True, log_every=5)
    train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").open()]
    fitted = next(r["fitted_steps"] for r in rows if "fitted_steps" in r)
    assert 40 < fitted < 60  # ~1 step/s, 60 s budget, 5% margin: not the 10000 asked for
    last = [r for r in rows if "loss" in r][-1]
    assert last["step"] == fitted  # ended by the fitted schedule, not cut by the deadline
    assert last["lr"] == pytest.approx(cfg.lr * cfg.min_lr_ratio, rel=0.01)  # fully decayed
    saved = json.loads((tmp_path / "train_config.json").read_text())
    assert saved["steps"] == fitted


def test_fit_to_time_is_a_cli_switch():
    from mmllm.cli import build_parser

    args = build_parser().parse_args(["train", "--fit-to-time", "--max-minutes", "5"])
    assert args.fit_to_time is True and args.max_minutes == 5.0
    assert build_parser().parse_args(["train"]).fit_to_time is None  # unset: the config decides


def test_projected_image_positions_are_set_before_training_and_kept(tmp_path):
    out = train(small_run(tmp_path / "a", steps=2, projected_image_positions=0.5))
    config = load_model(out).config
    assert config.projector.fixed_image_positions == 0.5


def test_lr_scale_gives_named_parts_their_own_learning_rate():
    from mmllm.train.config import lr_scales
    from mmllm.train.optim import adamw

    model = MultimodalLM(tiny_config())
    optimizer = adamw(model.named_parameters(), 1e-3, 0.05, scales={"image_projector.": 20.0})
    scaled = {id(p) for g in optimizer.param_groups if g["lr_scale"] == 20.0 for p in g["params"]}
    for name, param in model.named_parameters():
        assert (id(param) in scaled) == name.startswith("image_projector.")
    assert lr_scales("recognition.=20, image_projector.=2") == {
        "recognition.": 20.0,
        "image_projector.": 2.0,
    }
    for bad in ("recognition.", "=3", "recognition.=x", "recognition.=0"):
        with pytest.raises(ValueError, match="PREFIX=FACTOR"):
            TrainConfig(lr_scale=bad)
