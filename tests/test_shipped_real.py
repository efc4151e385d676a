"""The shipped default ``mmllm-real``: it names what is in a real photo, keeps the scores pinned
in ``scores.json`` (the scikit-image / scikit-learn / matplotlib photos of the real-photo set and
the first 100 records of ``synthetic:heldout``), and fits the size its card states."""

import json
from pathlib import Path

import pytest

import mmllm
from mmllm.eval.run import evaluate
from mmllm.weights.checkpoint import DEFAULT_CHECKPOINT, resolve_checkpoint

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "checkpoints" / "mmllm-real"
TOLERANCE = 0.03  # synthetic categories: 3 points of 100 records
PHOTO_SLACK = 1  # the pinned photos: one photo or question either way


@pytest.fixture(scope="module")
def real():
    return mmllm.load(device="cpu")


@pytest.fixture(scope="module")
def pinned():
    return json.loads((REAL / "scores.json").read_text())["pinned"]


def test_the_default_is_mmllm_real_and_ships_within_60_mb():
    assert DEFAULT_CHECKPOINT == "mmllm-real"
    assert resolve_checkpoint(None) == resolve_checkpoint(REAL)
    assert (REAL / "model.safetensors").stat().st_size <= 60 * 10**6
    card = (REAL / "README.md").read_text()
    assert "## Intended use and limits" in card and "oracle" in card


def test_the_default_names_the_cat_in_the_shipped_photo(real):
    caption = real.caption(ROOT / "demos" / "examples" / "cat.jpg")
    assert "cat" in caption.lower().replace(",", " ").split()
    answer = real.ask(ROOT / "demos" / "examples" / "cat.jpg", "what animal is this?")
    assert "cat" in answer.text.lower()


def test_pinned_synthetic_scores_hold(real, pinned):
    spec = pinned["synthetic"]
    scores = evaluate(real.model, real.tokenizer, spec["data"], spec["n"], spec["seed"])
    drops = {
        key: (value["accuracy"], scores[key]["accuracy"])
        for key, value in spec["scores"].items()
        if key in scores and scores[key]["accuracy"] < value["accuracy"] - TOLERANCE
    }
    assert not drops, f"categories below their pinned score (pinned, now): {drops}"


def test_pinned_photo_scores_hold(real, pinned, tmp_path):
    pytest.importorskip("skimage")
    pytest.importorskip("sklearn")
    from mmllm.data.real_photos import export_real_photos

    spec = pinned["photos"]
    data = export_real_photos(tmp_path, sources=tuple(spec["sources"]), progress=False)
    scores = evaluate(real.model, real.tokenizer, str(data), None)
    for key in ("photo/caption", "photo/vqa"):
        want, now = spec["scores"][key], scores[key]
        right_then = round(want["accuracy"] * want["n"])
        right_now = round(now["accuracy"] * now["n"])
        assert now["n"] == want["n"], key
        assert right_now >= right_then - PHOTO_SLACK, (key, right_then, right_now)
    assert scores["photo/degenerate"]["accuracy"] == 0.0
