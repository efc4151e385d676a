"""The shipped default ``mmllm-real``: it names what is in a real photo, keeps the scores pinned
in ``scores.json`` (the scikit-image / scikit-learn / matplotlib photos of the real-photo set and
the first 100 records of ``synthetic:heldout``), and fits the size its card states."""

import json
from pathlib import Path

import numpy as np
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


def trust(api):
    """What the evaluation reads of the checkpoint beside its weights, as ``ask`` does."""
    return api.calibration, api.media_distance


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


def test_a_photo_caption_says_only_what_the_recognizers_found(real):
    """The caption, the streamed caption's result and the answer to "what is this?" of a photo
    are ones the recognizers' findings support (``mmllm.grounding``); a synthetic scene's are
    the model's own, unchecked."""
    from mmllm.data.recognition_text import read_rows
    from mmllm.data.synthetic_image import render_scene, sample_scene
    from mmllm.grounding import grounded_answers, grounded_captions, normalized

    photo = ROOT / "demos" / "examples" / "coffee.jpg"
    media = real._media([[photo]], [[]])
    reading = read_rows(media.recognitions[0][media.recognition_mask[0]].numpy())
    caption = real.caption(photo)
    assert normalized(caption) in grounded_captions(reading), caption
    streamed = real.stream_caption(photo)
    "".join(streamed)
    assert streamed.result == caption and streamed.result.confidence == caption.confidence
    answer = real.ask(photo, "what is this?")
    assert normalized(answer.text) in grounded_answers(reading), answer.text
    rng = np.random.default_rng(0)
    scene = render_scene(sample_scene(rng), rng)
    media = real._media([[scene]], [[]])
    _, evidence = real._encode(media, 1)
    assert real._photo_findings(media, evidence, 0) is None


def test_existence_questions_about_a_photo_are_read_off_the_recognizers(real):
    """ "is there ...?" about a photo: "yes" where the recognizers name the thing, "no" where
    they do not (with an even probability for a thing they could never name); about a
    synthetic scene the model itself answers."""
    from mmllm.data.synthetic_image import render_scene, sample_scene

    photo = ROOT / "demos" / "examples" / "cat.jpg"
    cat = real.ask(photo, "Is there a cat in the picture?")
    assert (cat.text, cat.calibrated) == ("yes", True) and cat.prob > 0.5
    assert cat.evidence is not None and cat.evidence.known
    assert real.ask(photo, "are there any airplanes?").text == "no"
    louvre = real.ask(photo, "is there a Louvre in the picture?")
    assert louvre.text == "no" and louvre.prob == 0.5 and not louvre.evidence.known
    assert louvre.confidence < cat.confidence
    assert real.ask(photo, "is there a Louvre?", min_confidence=0.6).abstained
    assert real.read_off_answer(photo, "what animal is this?") is None
    cats, dogs = real.ask(photo, "how many cats are there?"), real.ask(photo, "How many dogs?")
    assert (cats.text, cats.evidence.count) == ("1", 1)
    assert real.ask(photo, "how many dogs are there?").text == "0"
    assert dogs.evidence is None  # not a question the pattern reads: the model answers
    rng = np.random.default_rng(0)
    scene = render_scene(sample_scene(rng), rng)
    assert real.read_off_answer(scene, "is there a red circle?") is None


def test_pinned_synthetic_scores_hold(real, pinned):
    spec = pinned["synthetic"]
    scores = evaluate(
        real.model, real.tokenizer, spec["data"], spec["n"], spec["seed"], trust=trust(real)
    )
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
    scores = evaluate(real.model, real.tokenizer, str(data), None, trust=trust(real))
    for key in ("photo/caption", "photo/vqa"):
        want, now = spec["scores"][key], scores[key]
        right_then = round(want["accuracy"] * want["n"])
        right_now = round(now["accuracy"] * now["n"])
        assert now["n"] == want["n"], key
        assert right_now >= right_then - PHOTO_SLACK, (key, right_then, right_now)
    assert scores["photo/degenerate"]["accuracy"] == 0.0


def test_the_shipped_sound_bank_names_no_synthetic_or_made_sound(real):
    """The bank (``mmllm.sound_bank``) knows the Tux Paint sound sources; what it must never do
    is name a beep, a tone, noise or silence, so the synthetic sound captions keep their scores."""
    from mmllm.data.sources import SyntheticSource

    assert real.sound_bank is not None and len(real.sound_bank.known()) >= 90
    assert {"a frog", "a chimpanzee", "a fire truck"} <= set(real.sound_bank.known())
    rng = np.random.default_rng(0)
    t = np.arange(32000, dtype=np.float32) / 16000
    made = [np.zeros_like(t), 0.1 * rng.standard_normal(t.shape), 0.5 * np.sin(2 * np.pi * 440 * t)]
    assert all(real.sound_bank.match(clip.astype(np.float32)) is None for clip in made)
    source = SyntheticSource("heldout", seed=11)
    sounds = [r.audio[0] for r in (source[i] for i in range(120)) if r.audio and not r.images]
    clips = [real.audio_processor(s) for s in sounds[:20]]
    assert len(clips) == 20 and all(real.sound_bank.match(c.numpy()) is None for c in clips)
