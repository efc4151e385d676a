"""Where training records come from: the synthetic world or a JSONL file, by global index.

Record ``k`` of a source is fixed by (source, seed, k), so a run's data position is just a step
number: resuming, or splitting a batch over ``torchrun`` ranks, needs no saved iterator state.
JSONL files are visited in a fresh seeded permutation each epoch. A mixture
(``synthetic:train@0.65+my.jsonl@0.35``) picks the source of record ``k`` by a seeded draw for
``k``, then takes that source's record ``k``. The synthetic world takes weights after a ``?``:
``synthetic:train?image_vqa=0.5&position_x=1`` changes those of the named tasks (``image_vqa``,
``audio_vqa``, ``both_vqa``, ``image_caption``, ``audio_caption``) or question keys (those of
``mmllm.data.synthetic.QUESTION_WEIGHTS``), the others keep their defaults.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mmllm.data.collate import Record
from mmllm.data.jsonl import read_jsonl
from mmllm.data.synthetic import DEFAULT_TASK_MIX, SyntheticWorld
from mmllm.errors import ConfigError


class SyntheticSource:
    """Infinite records of the synthetic world's ``split`` (see ``mmllm.data.synthetic``)."""

    def __init__(
        self, split: str = "train", seed: int = 0, image_size: int = 128, weights: str = ""
    ):

        changes = _parse_weights(weights)
        tasks = {k: v for k, v in changes.items() if k in DEFAULT_TASK_MIX}
        questions = {k: v for k, v in changes.items() if k not in DEFAULT_TASK_MIX}
        self.world = SyntheticWorld(
            split=split,
            seed=seed,
            image_size=image_size,
            task_mix={**DEFAULT_TASK_MIX, **tasks},
            question_weights=questions,
        )
        self.name = f"synthetic:{split}:{seed}" + (f"?{weights}" if weights else "")

    def __len__(self) -> int:
        return 1 << 40  # effectively infinite

    def __getitem__(self, index: int) -> Record:
        ex = self.world[index]
        return Record(
            prompt=ex.prompt,
            target=ex.target,
            images=[ex.image] if ex.image is not None else [],
            audio=[ex.audio] if ex.audio is not None else [],
            task=ex.task,
            category=ex.category,
            qtype=ex.qtype,
            scenes=[ex.scene] if ex.image is not None else [],
            referents=[ex.referents] if ex.image is not None else [],
        )


class JsonlSource:
    """A JSONL file's records, reshuffled every epoch with ``seed``."""

    def __init__(self, path: str | Path, seed: int = 0, shuffle: bool = True):
        self.records = read_jsonl(path)
        self.seed = seed
        self.shuffle = shuffle
        self.name = str(path)
        self._epoch, self._order = -1, np.arange(len(self.records))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Record:
        n = len(self.records)
        epoch, offset = divmod(index, n)
        if not self.shuffle:
            return self.records[offset]
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = np.random.default_rng([self.seed, epoch]).permutation(n)
        return self.records[self._order[offset]]


class MixtureSource:
    """Several sources drawn with fixed weights: record ``k`` is record ``k`` of the source a
    seeded draw for ``k`` picks, so it is still a pure function of ``(sources, seed, k)``."""

    def __init__(self, sources: list, weights: list[float], seed: int = 0):
        if len(sources) != len(weights) or not sources or min(weights) <= 0:
            raise ConfigError(f"a mixture needs one positive weight per source, got {weights}")
        self.sources = sources
        self.cumulative = np.cumsum(np.asarray(weights, dtype=np.float64) / sum(weights))
        self.seed = seed
        self.name = "+".join(f"{s.name}@{w:g}" for s, w in zip(sources, weights, strict=True))

    def __len__(self) -> int:
        return 1 << 40

    def __getitem__(self, index: int) -> Record:
        draw = np.random.default_rng([self.seed, 7919, index]).random()
        which = min(
            int(np.searchsorted(self.cumulative, draw, side="right")), len(self.sources) - 1
        )
        return self.sources[which][index]


def _parse_weights(text: str) -> dict[str, float]:
    """``"a=0.5&b=2"`` -> ``{"a": 0.5, "b": 2.0}`` (the synthetic world's weight changes)."""
    out = {}
    for part in filter(None, text.split("&")):
        key, _, value = part.partition("=")
        key = key.strip()
        try:
            number = float(value)  # "" (no "=") raises too
        except ValueError:
            number = float("nan")
        if not (math.isfinite(number) and number >= 0):
            raise ConfigError(f"synthetic weights {text!r}: {part!r} is not key=number >= 0")
        if key in out:  # the last would win silently: a typo'd recipe, most likely
            raise ConfigError(f"synthetic weights {text!r}: {key!r} is given twice")
        out[key] = number
    return out


def is_mixture(spec: str) -> bool:
    """Whether ``spec`` names several sources with weights (and is not a file's path)."""
    return ("+" in spec or "@" in spec) and not Path(spec).is_file()


def split_mixture(spec: str) -> list[tuple[str, float]]:
    """``"a@0.7+b@0.3"`` -> ``[("a", 0.7), ("b", 0.3)]``, weights scaled to sum to 1; a single
    source is ``[(spec, 1.0)]``."""
    if not is_mixture(spec):
        return [(spec, 1.0)]
    names, weights = [], []
    for part in spec.split("+"):
        name, sep, weight = part.rpartition("@")
        try:
            value = float(weight) if sep else 1.0
        except ValueError:
            value = float("nan")
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"data mixture {spec!r}: weight {weight!r} is not a number > 0")
        names.append(name if sep else part)
        weights.append(value)
    total = sum(weights)
    return [(n, w / total) for n, w in zip(names, weights, strict=True)]


def build_source(spec: str, seed: int = 0, image_size: int = 128, shuffle: bool = True):
    """``synthetic:<split>``, a path to a JSONL file, or a mixture of them with weights:
    ``synthetic:train@0.7+data/tuxpaint/train.jsonl@0.3``."""
    if is_mixture(spec):
        parts = split_mixture(spec)
        sources = [build_source(n, seed, image_size, shuffle) for n, _ in parts]
        return MixtureSource(sources, [w for _, w in parts], seed)
    if spec.startswith("synthetic"):
        spec, _, weights = spec.partition("?")
        split = spec.split(":", 1)[1] if ":" in spec else "train"
        return SyntheticSource(split, seed, image_size, weights)
    return JsonlSource(spec, seed, shuffle)
