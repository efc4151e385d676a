"""Synthetic audio: clip recipes (tones, beeps, chirps, noise), synthesis, captions, questions.

Part of the built-in synthetic world (DESIGN.md, "The synthetic world"). A :class:`Clip` is the
recipe; :func:`synthesize` renders it as 1-2 s of 16 kHz mono float32 with random amplitude, light
background noise and short silences at both ends. Tones use band-limited wavetables (no aliasing,
one table lookup per sample, so a clip costs well under a millisecond). The waveform is rounded to
the 16-bit grid (k / 32768, the convention soundfile and torchaudio read with), so it is exactly
what a 16-bit WAV stores and is identical across machines even where libm differs in the last bit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from mmllm.data.synthetic_image import NUMBER_WORDS, YES_NO, Fields, pick

SAMPLE_RATE = 16000
SOUND_KINDS = ("tone", "beeps", "chirp", "noise")
PITCHES: dict[str, float] = {"low": 220.0, "mid": 660.0, "high": 1760.0}  # Hz
TIMBRES = ("sine", "square", "saw")
DIRECTIONS = ("rising", "falling")
MAX_BEEPS = 5

_TABLE = 4096  # wavetable length (power of two)
_PITCH_JITTER = 0.03  # +-3% around the nominal pitch
_PCM_MAX = 32767 / 32768  # largest 16-bit sample as a float (the k / 32768 convention)


@dataclass(frozen=True)
class Clip:
    """A clip recipe. ``pitch`` for tones and beeps, ``timbre`` for tones, ``count`` for beeps,
    ``direction`` for chirps; unused fields are None. ``duration`` in seconds (1.0-2.0)."""

    kind: str
    pitch: str | None
    timbre: str | None
    count: int | None
    direction: str | None
    duration: float


def sample_clip(
    rng: np.random.Generator,
    kind: str | None = None,
    pitch: str | None = None,
    count: int | None = None,
    direction: str | None = None,
    exclude_kind: str | None = None,
) -> Clip:
    """Draw a clip recipe; given fields are kept, the rest drawn uniformly."""
    if kind is None:
        kinds = [k for k in SOUND_KINDS if k != exclude_kind]
        kind = kinds[int(rng.integers(len(kinds)))]
    duration = round(float(rng.uniform(1.0, 2.0)), 2)
    if kind == "tone":
        pitch = pitch or list(PITCHES)[int(rng.integers(len(PITCHES)))]
        timbre = TIMBRES[int(rng.integers(len(TIMBRES)))]
        return Clip("tone", pitch, timbre, None, None, duration)
    if kind == "beeps":
        pitch = pitch or list(PITCHES)[int(rng.integers(len(PITCHES)))]
        count = count if count is not None else int(rng.integers(1, MAX_BEEPS + 1))
        return Clip("beeps", pitch, None, count, None, duration)
    if kind == "chirp":
        direction = direction or DIRECTIONS[int(rng.integers(2))]
        return Clip("chirp", None, None, None, direction, duration)
    if kind == "noise":
        return Clip("noise", None, None, None, None, duration)
    raise ValueError(f"unknown sound kind {kind!r}; expected one of {SOUND_KINDS}")


@functools.lru_cache(maxsize=16)
def _wavetable(timbre: str, pitch: str) -> np.ndarray:
    """One period (_TABLE,) of ``timbre`` band-limited for ``pitch``, peak-normalised."""
    top = PITCHES[pitch] * (1 + _PITCH_JITTER)
    n_harm = max(1, int(0.48 * SAMPLE_RATE / top))
    phase = 2 * np.pi * np.arange(_TABLE) / _TABLE
    wave = np.zeros(_TABLE)
    for k in range(1, n_harm + 1):
        if timbre == "sine" and k > 1:
            break
        if timbre == "square" and k % 2 == 0:
            continue
        sign = -1.0 if (timbre == "saw" and k % 2 == 0) else 1.0
        wave += sign * np.sin(k * phase) / k
    return wave / np.abs(wave).max()


def _ramp(n: int, fade: int) -> np.ndarray:
    """Envelope (n,) with raised-cosine fades of ``fade`` samples at both ends."""
    env = np.ones(n)
    fade = min(fade, n // 2)
    if fade > 0:
        up = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
        env[:fade] = up
        env[n - fade :] = up[::-1]
    return env


def _tone(freq: float, n: int, table: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of a periodic wave read from ``table`` at ``freq`` Hz, random start phase."""
    phase = rng.random() + freq / SAMPLE_RATE * np.arange(n)
    return table[(phase * _TABLE).astype(np.int64) & (_TABLE - 1)]


def synthesize(clip: Clip, rng: np.random.Generator) -> np.ndarray:
    """Render ``clip`` as float32 mono (round(duration * SAMPLE_RATE),) in [-1, 1]."""
    sr = SAMPLE_RATE
    total = round(clip.duration * sr)
    out = np.zeros(total)
    lead = int(rng.uniform(0.05, 0.2) * sr)
    tail = int(rng.uniform(0.05, 0.15) * sr)
    body = total - lead - tail  # samples available for the sound itself
    amp = rng.uniform(0.3, 0.8)
    fade = int(0.005 * sr)
    if clip.kind in ("tone", "beeps"):
        assert clip.pitch is not None
        freq = PITCHES[clip.pitch] * rng.uniform(1 - _PITCH_JITTER, 1 + _PITCH_JITTER)
    if clip.kind == "tone":
        assert clip.timbre is not None and clip.pitch is not None
        length = int(body * rng.uniform(0.8, 1.0))
        wave = _tone(freq, length, _wavetable(clip.timbre, clip.pitch), rng)
        out[lead : lead + length] = amp * wave * _ramp(length, 2 * fade)
    elif clip.kind == "beeps":
        assert clip.count is not None and clip.pitch is not None
        beep, gap = rng.uniform(0.07, 0.12) * sr, rng.uniform(0.08, 0.16) * sr
        need = clip.count * beep + (clip.count - 1) * gap
        if need > body:  # squeeze to fit; the minimum (5 x 70 ms + 4 x 80 ms) always fits in 1 s
            beep, gap = beep * body / need, gap * body / need
        beep_n = int(beep)
        table = _wavetable("sine", clip.pitch)
        for i in range(clip.count):
            start = lead + int(i * (beep + gap))
            out[start : start + beep_n] = (
                amp * _tone(freq, beep_n, table, rng) * _ramp(beep_n, fade)
            )
    elif clip.kind == "chirp":
        length = int(body * rng.uniform(0.6, 1.0))
        lo, hi = rng.uniform(250.0, 400.0), rng.uniform(2200.0, 3500.0)
        f0, f1 = (lo, hi) if clip.direction == "rising" else (hi, lo)
        t = np.arange(length) / sr
        span = length / sr
        k = np.log(f1 / f0)
        phase = 2 * np.pi * f0 * span / k * (np.exp(t * k / span) - 1)  # exponential sweep
        out[lead : lead + length] = amp * np.sin(phase) * _ramp(length, 2 * fade)
    elif clip.kind == "noise":
        length = int(body * rng.uniform(0.4, 1.0))
        burst = rng.uniform(-1.0, 1.0, size=length)
        out[lead : lead + length] = 0.8 * amp * burst * _ramp(length, 2 * fade)
    else:
        raise ValueError(f"unknown sound kind {clip.kind!r}; expected one of {SOUND_KINDS}")
    out += rng.normal(0.0, rng.uniform(0.002, 0.008), size=total)
    return (np.round(np.clip(out, -1.0, _PCM_MAX) * 32768) / 32768).astype(np.float32)


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """int16 samples of a waveform from :func:`synthesize` (exact: k / 32768 -> k)."""
    return np.round(np.clip(audio, -1.0, _PCM_MAX) * 32768).astype(np.int16)


def clip_caption(clip: Clip, rng: np.random.Generator) -> str:
    """A caption naming the clip's kind and its pitch / timbre / beep count / direction."""
    style = int(rng.integers(3))
    if clip.kind == "tone":
        p, t = clip.pitch, clip.timbre
        return (f"a {p} {t} tone", f"a steady {p} {t} tone", f"a {t} tone at {p} pitch")[style]
    if clip.kind == "beeps":
        n, p = clip.count or 1, clip.pitch
        noun = "beep" if n == 1 else "beeps"
        det = ("a single" if style == 1 else "one") if n == 1 else NUMBER_WORDS[n]
        return (
            f"{det} short {p} {noun}",
            f"{det} {p} {noun}",
            f"{det} short {noun} at {p} pitch",
        )[style]
    if clip.kind == "chirp":
        d = clip.direction
        return (f"a {d} chirp", f"a chirp {d} in pitch", f"a {d} sweep")[style]
    if clip.kind == "noise":
        return ("a burst of noise", "a short noise burst", "a noise burst")[style]
    raise ValueError(f"unknown sound kind {clip.kind!r}; expected one of {SOUND_KINDS}")


def clip_question(key: str, rng: np.random.Generator) -> tuple[Clip, Fields, str]:
    """A clip made for question ``key`` (keys as in ``synthetic.TEMPLATES``), its template fields
    and the answer; yes/no answers are drawn first, so they are balanced."""
    if key == "pitch":
        clip = sample_clip(rng, kind=pick(rng, ("tone", "beeps")))
        return clip, {}, str(clip.pitch)
    if key == "timbre":
        clip = sample_clip(rng, kind="tone")
        return clip, {}, str(clip.timbre)
    if key == "beeps":
        clip = sample_clip(rng, kind="beeps")
        return clip, {}, str(clip.count)
    if key == "direction":
        clip = sample_clip(rng, kind="chirp")
        return clip, {}, str(clip.direction)
    if key == "noise":
        answer = pick(rng, YES_NO)
        clip = (
            sample_clip(rng, kind="noise")
            if answer == "yes"
            else sample_clip(rng, exclude_kind="noise")
        )
        return clip, {}, answer
    if key == "sound":
        clip = sample_clip(rng)
        return clip, {}, clip.kind
    raise KeyError(key)
