"""Replay: a fine-tune mixes the initial model's own training data into its batches.

Fine-tuned on new data alone, a model learns it and forgets the rest (mmllm-tiny on a shape-VQA
set: synthetic image questions from 96% to 22%). Rehearsal, which is mixing a share of the old data
back in, is the plain remedy (Robins, 1995; Rolnick et al., 2019).

Each checkpoint saved by ``mmllm train`` records what it was trained on in
``training_data.json``:

    {"data": "synthetic:train@0.5+my.jsonl@0.5", "heldout": ["synthetic:heldout", "test.jsonl"],
     "make": {"data/tuxpaint/train.jsonl": "mmllm data tuxpaint --out data/tuxpaint"}}

``data`` is a data spec (``mmllm.data.sources``) and ``heldout`` the held-out sets its skills
are measured on; ``make`` says how to regenerate a file that is not at hand. A replay takes
every part of ``data`` that can be had: the synthetic world always (it is generated), a file
when it exists. The parts that cannot are named in ``ReplayPlan.missing``, with the command
that makes them, and the rest of the mixture is reweighted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from mmllm.data.sources import MixtureSource, build_source, split_mixture
from mmllm.errors import ConfigError

TRAINING_DATA = "training_data.json"


@dataclass(frozen=True)
class TrainingData:
    """What a checkpoint was trained on (``training_data.json``)."""

    data: str
    heldout: tuple[str, ...] = ()
    make: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"data": self.data, "heldout": list(self.heldout), "make": dict(self.make)}


def read_training_data(folder: str | Path) -> TrainingData | None:
    """``folder``'s ``training_data.json``, or None when it has none (an imported model)."""
    path = Path(folder) / TRAINING_DATA
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        return TrainingData(
            data=str(raw["data"]),
            heldout=tuple(str(h) for h in raw.get("heldout", [])),
            make={str(k): str(v) for k, v in raw.get("make", {}).items()},
        )
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"{path}: not a training-data record ({err})") from err


def write_training_data(folder: str | Path, record: TrainingData) -> None:
    (Path(folder) / TRAINING_DATA).write_text(json.dumps(record.to_dict(), indent=2) + "\n")


@dataclass(frozen=True)
class ReplayPlan:
    """The parts of a model's training data that a replay draws from, with their weights (summing
    to 1), and the parts it cannot have, with how to make them."""

    parts: tuple[tuple[str, float], ...]
    missing: tuple[tuple[str, float, str], ...]  # (spec, weight in the original mixture, how)

    @property
    def spec(self) -> str:
        """The replay as one data spec (``a@0.65+b@0.35``)."""
        return "+".join(f"{name}@{weight:.4g}" for name, weight in self.parts)

    def describe(self) -> str:
        """One or two sentences for a run's log and summary."""
        if not self.parts:
            return "nothing can be replayed: " + self._missing_text()
        text = f"replays {self.spec}"
        return text + (f"; cannot replay {self._missing_text()}" if self.missing else "")

    def _missing_text(self) -> str:
        return "; ".join(
            f"{spec} ({weight:.0%} of the mixture: not found"
            + (f"; make it with `{how}`)" if how else ")")
            for spec, weight, how in self.missing
        )


def plan_replay(record: TrainingData) -> ReplayPlan:
    """Which parts of ``record.data`` can be replayed here."""
    parts, missing = [], []
    for spec, weight in split_mixture(record.data):
        if spec.startswith("synthetic") or Path(spec).is_file():
            parts.append((spec, weight))
        else:
            missing.append((spec, weight, record.make.get(spec, "")))
    total = sum(w for _, w in parts)
    return ReplayPlan(
        parts=tuple((s, w / total) for s, w in parts),
        missing=tuple(missing),
    )


def with_replay(source, plan: ReplayPlan, share: float, seed: int, image_size: int):
    """``source`` with ``share`` of its records drawn from the replay instead."""
    if not (math.isfinite(share) and 0 <= share < 1):
        raise ConfigError(f"replay share {share} must be in [0, 1)")
    if share == 0 or not plan.parts:
        return source
    replay = build_source(plan.spec, seed=seed, image_size=image_size)
    return MixtureSource([source, replay], [1 - share, share], seed=seed + 1)
