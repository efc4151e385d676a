"""The shipped checkpoint: loads by default and keeps the scores pinned in its model card.

The pinned sample is the first 300 records of ``synthetic:heldout`` (seed 0), scored when the
card was written (``checkpoints/mmllm-tiny/scores.json``). A refactor or dependency bump that
silently degrades the model fails here: no category may fall more than 3 points.
"""

import json
from pathlib import Path

import pytest

import mmllm
from mmllm.eval.run import evaluate

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "mmllm-tiny"
TOLERANCE = 0.03


@pytest.fixture(scope="module")
def shipped():
    return mmllm.load("mmllm-tiny", device="cpu")


def test_the_shipped_tiny_checkpoint_is_small(shipped):
    weights = (SHIPPED / "model.safetensors").stat().st_size
    assert weights <= 30 * 10**6
    assert sum(p.numel() for p in shipped.model.parameters()) * 4 <= weights


def test_pinned_scores_hold(shipped):
    pinned = json.loads((SHIPPED / "scores.json").read_text())["pinned"]
    scores = evaluate(shipped.model, shipped.tokenizer, pinned["data"], pinned["n"], pinned["seed"])
    keys = ["image", "audio", "both", "caption_attributes/image", "caption_attributes/audio"]
    drops = {
        key: (pinned["scores"][key]["accuracy"], scores[key]["accuracy"])
        for key in keys
        if scores[key]["accuracy"] < pinned["scores"][key]["accuracy"] - TOLERANCE
    }
    assert not drops, f"categories below their pinned score (pinned, now): {drops}"


def test_shipped_model_answers_real_questions(shipped):
    examples = Path(__file__).resolve().parent.parent / "demos" / "examples"
    scene = examples / "shapes2.png"  # a small red circle left of a large blue star
    # answers that depend on the object named: a model that ignores it fails one of each pair
    assert shipped.ask(scene, "what shape is the red object?").text == "circle"
    assert shipped.ask(scene, "what shape is the blue object?").text == "star"
    assert shipped.ask(scene, "is there a red circle?").text == "yes"
    assert shipped.ask(scene, "is there a green square?").text == "no"
    beeps = shipped.ask(audio=examples / "beeps.wav", question="how many beeps are there?")
    assert beeps.text == "2" and beeps.prob > 0.5
    assert shipped.caption(audio=examples / "beeps.wav") == "two short high beeps"
