"""Known sounds named by their nearest neighbour: a bank of labelled clips' spectral statistics.

A decoder trained on the synthetic world's tones cannot learn a hundred real sound sources from
one short clip each (mmllm-real names none of the Tux Paint sound effects). A nearest-neighbour
bank can: each known clip is kept as statistics over time of its 80-bin log-mel spectrum
(Whisper's features, ``encoders.spectrogram.WhisperLogMel``): the mean, the standard deviation
and the 10th, 50th and 90th percentiles of each bin, standardized by the bank's own statistics
and scaled to unit length. A new clip is named after the entry it is closest to by cosine.

The bank also holds *reject* entries, with no name: the synthetic world's sounds, silence,
noise, tones and chirps. A clip is named only when its closest entry has a name, and that entry is
closer than every reject entry by at least ``MIN_MARGIN``. So a beep, a hum or a silent clip
stays with the model's own caption. Chosen by the seen-source split of the Tux Paint sounds
(``mmllm.data.tuxpaint``), see ``scripts/build_sound_bank.py``.

``MMLLM.caption(audio=...)`` asks the bank after the speech recognizer has heard no speech,
and before the model's own caption: "the sound of a frog". Its confidence is uncalibrated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from encoders.spectrogram import WhisperLogMel
from encoders.speech import SAMPLE_RATE

N_MELS = 80
HOP = 160
WINDOW_SECONDS = 30  # a clip's first 30 s are read
MIN_MARGIN = 0.02  # how much closer the named entry must be than every reject entry
MIN_SECONDS = 0.1  # shorter clips are not named (the bank's shortest known piece is 0.11 s)
BANK_FILE = "sound_bank.safetensors"  # a checkpoint's bank
PERCENTILES = (10.0, 50.0, 90.0)
N_FEATURES = N_MELS * (2 + len(PERCENTILES))


class SoundFeatures:
    """A mono 16 kHz waveform ``(S,)`` -> its log-mel statistics ``(N_FEATURES,)``: per bin the
    mean, the standard deviation and the ``PERCENTILES`` over the clip's frames."""

    def __init__(self):
        self.mel = WhisperLogMel(SAMPLE_RATE, 400, HOP, N_MELS, WINDOW_SECONDS * SAMPLE_RATE)

    @torch.inference_mode()
    def __call__(self, waveform: torch.Tensor | np.ndarray) -> np.ndarray:
        wave = torch.as_tensor(np.asarray(waveform, dtype=np.float32)).flatten()
        wave = wave[: WINDOW_SECONDS * SAMPLE_RATE]
        if wave.numel() == 0:
            wave = torch.zeros(HOP)
        mel, frames = self.mel(wave[None], torch.tensor([wave.numel()]))
        cells = mel[0, :, : max(1, int(frames[0]))].T.numpy()  # (T, 80): the clip's own frames
        spread = np.percentile(cells, PERCENTILES, axis=0).ravel()
        return np.concatenate([cells.mean(0), cells.std(0), spread]).astype(np.float32)


@dataclass(frozen=True)
class SoundMatch:
    """A clip's closest named entry: its ``name`` ("a frog"), the cosine ``similarity``, and
    by how much it beats the closest reject entry (``margin``)."""

    name: str
    similarity: float
    margin: float


@dataclass
class SoundBank:
    """Entries ``vectors`` ``(N, N_FEATURES)`` (standardized, unit length) with their ``names``
    ("" for a reject entry), the standardization ``mean``, ``std`` ``(N_FEATURES,)``, and
    ``precision``: the share of named held-out clips named right when the bank was built (the
    confidence of a match, uncalibrated)."""

    vectors: np.ndarray
    names: list[str]
    mean: np.ndarray
    std: np.ndarray
    min_margin: float = MIN_MARGIN
    precision: float = 0.5

    @classmethod
    def build(cls, named: list[tuple[str, np.ndarray]], rejects: list[np.ndarray]) -> SoundBank:
        """A bank of ``(name, waveform)`` clips and reject waveforms."""
        features = SoundFeatures()
        raw = np.stack([features(w) for _, w in named] + [features(w) for w in rejects])
        mean, std = raw.mean(0), raw.std(0) + 1e-6
        names = [name for name, _ in named] + [""] * len(rejects)
        return cls(_unit((raw - mean) / std), names, mean, std)

    def __post_init__(self):
        self.named = np.array([bool(n) for n in self.names])  # (N,): False for reject entries
        self._features: SoundFeatures | None = None

    def match(self, waveform: torch.Tensor | np.ndarray) -> SoundMatch | None:
        """The named entry a mono 16 kHz clip is closest to, or None where a reject entry is as
        close (within ``min_margin``), there is no named entry, or the clip is shorter than
        ``MIN_SECONDS``."""
        if not self.named.any() or np.asarray(waveform).size < MIN_SECONDS * SAMPLE_RATE:
            return None
        if self._features is None:
            self._features = SoundFeatures()
        vector = _unit((self._features(waveform) - self.mean) / self.std)
        sims = self.vectors @ vector  # (N,)
        best = int(np.argmax(np.where(self.named, sims, -np.inf)))
        rejected = sims[~self.named]
        margin = float(sims[best]) - (float(rejected.max()) if rejected.size else -1.0)
        if margin < self.min_margin:
            return None
        return SoundMatch(self.names[best], float(sims[best]), margin)

    def known(self) -> list[str]:
        """The names the bank knows, each once, sorted."""
        return sorted({n for n in self.names if n})

    def save(self, path: str | Path) -> None:
        """A safetensors file: the entries in fp16 (they are unit vectors), the rest fp32."""
        tensors = {
            "vectors": np.ascontiguousarray(self.vectors, np.float16),
            "mean": np.ascontiguousarray(self.mean, np.float32),
            "std": np.ascontiguousarray(self.std, np.float32),
        }
        metadata = {
            "names": json.dumps(self.names),
            "min_margin": str(self.min_margin),
            "precision": str(self.precision),
        }
        save_file(tensors, str(path), metadata)

    @classmethod
    def load(cls, path: str | Path) -> SoundBank:
        with safe_open(str(path), framework="np") as f:  # one read: tensors and metadata
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        return cls(
            tensors["vectors"].astype(np.float32),
            json.loads(metadata["names"]),
            tensors["mean"],
            tensors["std"],
            float(metadata.get("min_margin", MIN_MARGIN)),
            float(metadata.get("precision", 0.5)),
        )

    @classmethod
    def of_checkpoint(cls, folder: str | Path) -> SoundBank | None:
        """The bank a checkpoint ships (``BANK_FILE``), or None."""
        path = Path(folder) / BANK_FILE
        return cls.load(path) if path.is_file() else None


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def sound_caption(match: SoundMatch) -> str:
    """ "the sound of a frog"."""
    return f"the sound of {match.name}"


def sound_name(description: str) -> str | None:
    """A Tux Paint description as the name of what makes the sound ("A brown hen." -> "a brown
    hen"), or None where it does not start with an article: a sentence or an exclamation
    ("Remember to flush the toilet...", "Happy!"), not a thing."""
    text = description.strip().rstrip(".!?").strip()
    first, _, rest = text.partition(" ")
    if first not in ("A", "An", "The") or not rest:
        return None
    return f"{first.lower()} {rest}"
