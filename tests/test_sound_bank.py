"""Known sounds named by their nearest neighbour (``mmllm.sound_bank``)."""

from __future__ import annotations

import numpy as np
import pytest

import mmllm
from mmllm.sound_bank import BANK_FILE, N_FEATURES, SoundBank, SoundFeatures, sound_name

RATE = 16000


def hum(seconds: float, f0: float, seed: int) -> np.ndarray:
    """A buzzing hum: harmonics of ``f0`` with a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    return (0.2 * wave + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def hiss(seconds: float, seed: int) -> np.ndarray:
    """High-passed noise, like steam."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(int(seconds * RATE))
    return (0.3 * np.diff(noise, prepend=0.0)).astype(np.float32)


@pytest.fixture(scope="module")
def bank() -> SoundBank:
    named = [("a bee", hum(1.0, 220, 0)), ("a kettle", hiss(1.0, 1))]
    rejects = [np.zeros(RATE, np.float32), hum(1.0, 1000, 2)]
    return SoundBank.build(named, rejects)


def test_a_clip_is_named_after_its_nearest_known_sound(bank):
    assert bank.match(hum(0.6, 225, 10)).name == "a bee"  # another part of the same source
    assert bank.match(hiss(0.6, 11)).name == "a kettle"
    assert bank.known() == ["a bee", "a kettle"]


def test_a_clip_nearest_a_reject_entry_is_not_named(bank):
    assert bank.match(np.zeros(RATE // 2, np.float32)) is None  # silence
    assert bank.match(hum(0.8, 990, 12)) is None  # a high hum: the reject entry's
    assert bank.match(np.zeros(0, np.float32)) is None  # an empty clip


def test_the_margin_over_reject_entries_decides(bank):
    clip = hum(0.6, 225, 10)
    match = bank.match(clip)
    assert match.margin > 0
    strict = SoundBank(
        bank.vectors, bank.names, bank.mean, bank.std, min_margin=match.margin + 1e-3
    )
    assert strict.match(clip) is None


def test_the_bank_survives_saving(bank, tmp_path):
    bank.precision = 0.7
    bank.save(tmp_path / BANK_FILE)
    loaded = SoundBank.of_checkpoint(tmp_path)
    assert loaded.names == bank.names and loaded.precision == pytest.approx(0.7)
    np.testing.assert_allclose(loaded.vectors, bank.vectors, atol=1e-3)  # stored in fp16
    assert loaded.match(hiss(0.6, 11)).name == "a kettle"
    assert SoundBank.of_checkpoint(tmp_path / "elsewhere") is None


def test_features_are_statistics_over_time():
    features = SoundFeatures()(hum(2.0, 220, 0))
    assert features.shape == (N_FEATURES,) and np.isfinite(features).all()
    # a clip and the same clip twice over: the same statistics
    twice = SoundFeatures()(np.tile(hum(1.0, 220, 0), 2))
    np.testing.assert_allclose(features[:80], twice[:80], atol=0.05)


@pytest.mark.parametrize(
    ("description", "name"),
    [
        ("A frog.", "a frog"),
        ("An owl.", "an owl"),
        ("A brown hen.", "a brown hen"),
        ("The Apollo lunar lander module.", "the Apollo lunar lander module"),
        ("Happy!", None),
        ("Remember to flush the toilet and wash your hands with soap!", None),
        ("A", None),
    ],
)
def test_sound_names_are_the_things_a_description_names(description, name):
    assert sound_name(description) == name


def test_a_sound_caption_names_silence_a_known_sound_or_falls_back_to_the_model(
    tiny_checkpoint, bank, monkeypatch
):
    api = mmllm.load(tiny_checkpoint, device="cpu")
    monkeypatch.setattr(api, "caption_speech", lambda *a, **k: None)  # no speech heard
    api.sound_bank = bank
    bank.precision = 0.6
    named = api.caption(audio=hum(0.6, 225, 10))
    assert named == "the sound of a bee" and named.confidence == pytest.approx(0.6)
    assert not named.calibrated
    unknown = api.caption(audio=hum(0.8, 990, 12))  # nearest a reject entry
    assert not unknown.startswith("the sound of")  # the model's own caption
    silence = api.caption(audio=np.zeros(RATE, np.float32))
    assert silence == "silence" and silence.confidence == 1.0  # no sample above -60 dBFS
    assert api.caption(audio=np.zeros(RATE, np.float32), listen=False) != "silence"
    assert not api.caption(audio=hum(0.6, 225, 10), listen=False).startswith("the sound of")
    assert api.caption(audio=hum(0.6, 225, 10), min_confidence=0.9).abstained
