"""The `mmllm` command: help with examples, captions, JSON output, exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mmllm.cli import main


def test_help_of_each_user_command_shows_examples():
    for command in ("caption", "alt-text", "ask", "eval", "train"):
        result = subprocess.run(
            [sys.executable, "-m", "mmllm.cli", command, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0 and "examples:" in result.stdout, command


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, colour in enumerate(["red", "blue"]):
        Image.new("RGB", (16, 16), colour).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def test_caption_folder_json_reports_each_file_and_fails_on_the_bad_one(
    tiny_checkpoint, images, capsys
):
    code = main(["caption", str(images), "--checkpoint", str(tiny_checkpoint), "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 2  # some input was bad
    assert sorted(r["file"].rsplit("/", 1)[1] for r in rows) == ["0.png", "1.png", "broken.png"]
    assert next(r for r in rows if "error" in r)["file"].endswith("broken.png")


def test_caption_one_good_image_exits_zero(tiny_checkpoint, images, capsys):
    code = main(["caption", str(images / "0.png"), "--checkpoint", str(tiny_checkpoint)])
    assert code == 0 and capsys.readouterr().out.strip()


def test_ask_json(tiny_checkpoint, images, capsys):
    code = main(
        [
            "ask",
            str(images / "0.png"),
            "-q",
            "is it red?",
            "--choices",
            "yes,no",
            "--checkpoint",
            str(tiny_checkpoint),
            "--json",
        ]
    )
    answer = json.loads(capsys.readouterr().out)
    assert code == 0 and answer["answer"] in ("yes", "no")


def test_ask_with_a_spoken_question_and_none_at_all(tiny_checkpoint, images, capsys):
    """No --question: the --audio clip is the question said aloud (what was heard is
    reported); with no clip either, a typed error and exit code 2."""
    spoken = Path(__file__).resolve().parent.parent / "demos" / "examples" / "question.wav"
    common = [str(images / "0.png"), "--checkpoint", str(tiny_checkpoint)]
    assert main(["ask", *common, "--audio", str(spoken), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["question"] == "What color is the circle?" and "answer" in answer
    assert main(["ask", *common]) == 2
    assert "question is empty" in capsys.readouterr().err


def test_missing_checkpoint_is_exit_code_1(images, capsys):
    assert main(["caption", str(images / "0.png"), "--checkpoint", "no-such-model"]) == 1
    assert "no-such-model" in capsys.readouterr().err


def test_data_synth_exports_jsonl(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--n", "3", "--seed", "1"]) == 0
    assert len((tmp_path / "data.jsonl").read_text().splitlines()) == 3


def test_caption_audio_file(tiny_checkpoint, tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "tone.wav", 0.3 * np.sin(np.arange(16000) * 0.3), 16000)
    code = main(["caption", str(tmp_path / "tone.wav"), "--checkpoint", str(tiny_checkpoint)])
    assert code == 0 and capsys.readouterr().out.strip()


def test_help_imports_no_training_module_nor_the_builder():
    import subprocess
    import sys

    for command in (["--help"], ["caption", "--help"]):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "mmllm.cli", *command],
            capture_output=True,
            text=True,
            check=True,
        )
        imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines()}
        assert "mmllm.tasks" in imported  # the run itself is measured (cli runs as __main__)
        heavy = {m for m in imported if m.startswith(("mmllm.train", "mmllm.weights.build"))}
        assert not heavy, heavy
        assert "mmllm.data.synthetic" not in imported
