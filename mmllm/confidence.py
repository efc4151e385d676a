"""How sure the model is of an output: a calibrated probability that it is right.

Two measured parts, multiplied:

- **in domain**: how far the input's media are from what the model was trained on. The mean
  media token (what cross-attention reads) and the tokens' spread, per kind of input (image,
  audio, both), are scored by their Mahalanobis distance to the training inputs' (in units of
  held-out in-domain inputs' median), and a logistic curve on the log distance, fitted on
  in-domain versus out-of-domain inputs (noise, blank frames, silence, photos the model never
  saw), says how likely the input is in domain (``MediaDistance``);
- **right if in domain**: a logistic regression on the output's own token log-probabilities
  (mean and minimum; for answers the answer's probability), fitted per kind of output
  (caption, answer) on in-domain held-out data where right and wrong are known.

An out-of-domain input is taken to be answered wrongly, so ``confidence = in_domain * right``.
``scripts/calibrate.py`` fits both on one half of the held-out data, measures the expected
calibration error and the separation (AUROC) on the other half, and stores the result with
the checkpoint (``calibration.json``, ``media_stats.safetensors``). A checkpoint without them
gets the raw token probability, marked uncalibrated.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CALIBRATION_FILE, STATS_FILE = "calibration.json", "media_stats.safetensors"
SHRINK = 0.1  # covariance shrinkage towards its diagonal: stable with few samples
KINDS = ("image", "audio", "image+audio")


def media_kind(has_image: bool, has_audio: bool) -> str | None:
    if has_image and has_audio:
        return "image+audio"
    return "image" if has_image else "audio" if has_audio else None


def kind_features(kinds: list[str | None]) -> np.ndarray:
    """Each input's kind as indicators ``(n, 2)``: audio only, image and audio (a model is
    surer of some kinds of input than of others)."""
    return np.array([[k == "audio", k == "image+audio"] for k in kinds], dtype=np.float64)


def pooled_tokens(media: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """media ``(B, N, D)`` with mask ``(B, N)`` -> the mean valid token and the tokens'
    spread around it, ``(B, 2D)``: a blank frame has the mean of a plain scene but no spread."""
    weights = mask.to(media.dtype)[..., None]
    count = weights.sum(1).clamp(min=1)
    mean = (media * weights).sum(1) / count
    spread = (((media - mean[:, None]) ** 2 * weights).sum(1) / count).sqrt()
    return torch.cat([mean, spread], -1)


def token_features(logprobs: list[float]) -> list[float]:
    """An output's token log-probabilities (EOS included) -> [mean, min]."""
    if not logprobs:
        return [0.0, 0.0]
    return [sum(logprobs) / len(logprobs), min(logprobs)]


@dataclass(frozen=True)
class Logistic:
    """``sigmoid(x @ weights + bias)`` for features ``x`` ``(n, F)``."""

    weights: tuple[float, ...]
    bias: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = np.asarray(x, dtype=np.float64) @ np.asarray(self.weights) + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    @classmethod
    def fit(
        cls, x: np.ndarray, y: np.ndarray, scale: np.ndarray | None = None, l2: float = 1e-2
    ) -> Logistic:
        """Maximum likelihood with a small L2 penalty on the weights: ``x`` ``(n, F)``, ``y``
        ``(n,)`` of 0/1. With ``scale`` ``(n,)`` the fitted probability is ``scale * curve``
        (the curve is fitted under a known factor, e.g. the in-domain probability)."""
        xt, yt = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
        st = torch.ones_like(yt) if scale is None else torch.tensor(scale, dtype=torch.float64)
        w = torch.zeros(xt.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros((), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

        def loss() -> torch.Tensor:
            optimizer.zero_grad()
            p = (st * torch.sigmoid(xt @ w + b)).clamp(1e-9, 1 - 1e-9)
            value = -(yt * p.log() + (1 - yt) * (1 - p).log()).sum() + 0.5 * l2 * (w * w).sum()
            value.backward()
            return value

        optimizer.step(loss)
        return cls(tuple(float(v) for v in w.detach()), float(b.detach()))


class MediaDistance:
    """Per kind of input, the mean and shrunk inverse covariance of in-domain mean media tokens,
    and the median in-domain distance (the unit)."""

    def __init__(self, stats: dict[str, dict[str, torch.Tensor]]):
        self.stats = stats

    @classmethod
    def fit(cls, pooled: dict[str, torch.Tensor]) -> MediaDistance:
        """``{kind: (n, D) in-domain mean media tokens}`` -> the statistics."""
        stats = {}
        for kind, x in pooled.items():
            x = x.double()
            mean = x.mean(0)
            cov = torch.cov((x - mean).T).reshape(x.shape[1], x.shape[1])
            cov = (
                (1 - SHRINK) * cov
                + SHRINK * torch.diag(cov.diagonal())
                + 1e-6 * torch.eye(len(mean), dtype=cov.dtype)
            )
            precision = torch.linalg.inv(cov)
            entry = {"mean": mean, "precision": precision}
            entry["median"] = _distance(x, entry).median().reshape(1)
            stats[kind] = entry
        return cls(stats)

    def set_units(self, pooled: torch.Tensor, kinds: list[str | None]) -> None:
        """Make the unit of each kind the median distance of these inputs ``(n, D)``:
        held-out in-domain ones, so that units are equal across kinds (distances of the
        fitted inputs themselves are smaller, the more so the fewer they are)."""
        for kind, entry in self.stats.items():
            rows = [i for i, k in enumerate(kinds) if k == kind]
            if rows:
                entry["median"] = _distance(pooled[rows].double(), entry).median().reshape(1)

    def __call__(self, pooled: torch.Tensor, kinds: list[str | None]) -> torch.Tensor:
        """pooled ``(B, D)`` of inputs of ``kinds`` -> distances ``(B,)`` in units of the
        in-domain median (0 for a text-only row; inf for a kind never seen in training)."""
        out = torch.zeros(len(kinds), dtype=torch.float64)
        for kind in {k for k in kinds if k is not None}:
            rows = [i for i, k in enumerate(kinds) if k == kind]
            entry = self.stats.get(kind)
            if entry is None:
                out[rows] = math.inf
            else:
                out[rows] = _distance(pooled[rows].double().cpu(), entry) / entry["median"]
        return out

    def save(self, path: Path) -> None:
        flat = {
            f"{kind}.{k}": v.float().contiguous()
            for kind, e in self.stats.items()
            for k, v in e.items()
        }
        save_file(flat, str(path))

    @classmethod
    def load(cls, path: Path) -> MediaDistance:
        stats: dict[str, dict[str, torch.Tensor]] = {}
        for name, value in load_file(str(path)).items():
            kind, key = name.rsplit(".", 1)
            stats.setdefault(kind, {})[key] = value.double()
        return cls(stats)


def in_domain_features(distance: np.ndarray, kinds: list[str | None]) -> np.ndarray:
    """Distances ``(n,)`` and kinds -> the in-domain curve's features ``(n, 3)``."""
    d = np.log(np.clip(np.asarray(distance, np.float64), 1e-6, 1e12))[:, None]
    return np.concatenate([d, kind_features(kinds)], 1)


def in_domain_prob(curve: Logistic, distance: np.ndarray, kinds: list[str | None]) -> np.ndarray:
    """Distances ``(n,)`` (``MediaDistance``) of inputs of ``kinds`` -> the probability that
    each is in domain (0 for a kind of input never trained on; 1 for text alone)."""
    d = np.asarray(distance, np.float64)
    p = curve(in_domain_features(d, kinds))
    p = np.where(np.isfinite(d), p, 0.0)
    return np.where([k is None for k in kinds], 1.0, p)


def _distance(x: torch.Tensor, entry: dict[str, torch.Tensor]) -> torch.Tensor:
    centred = x - entry["mean"]
    return ((centred @ entry["precision"]) * centred).sum(-1).clamp(min=0).sqrt()


@dataclass(frozen=True)
class Calibration:
    """The fitted parts (see the module docstring) and the threshold ``mmllm alt-text`` uses
    by default; ``measured`` keeps the figures of the fit (ECE, AUROC, sizes)."""

    in_domain: Logistic  # features: log distance, kind_features
    caption: Logistic  # features: mean, min token log-probability, kind_features
    answer: Logistic  # features: log answer probability, kind_features
    alt_text_threshold: float
    measured: dict

    def in_domain_prob(self, distance: np.ndarray, kinds: list[str | None]) -> np.ndarray:
        return in_domain_prob(self.in_domain, distance, kinds)

    def caption_confidence(
        self, features: np.ndarray, distance: np.ndarray, kinds: list[str | None]
    ) -> np.ndarray:
        """Token features ``(n, 2)`` (``token_features``), distances ``(n,)`` -> ``(n,)``."""
        x = np.concatenate([np.asarray(features, np.float64), kind_features(kinds)], 1)
        return self.caption(x) * self.in_domain_prob(distance, kinds)

    def answer_confidence(
        self, prob: np.ndarray, distance: np.ndarray, kinds: list[str | None]
    ) -> np.ndarray:
        """Answer probabilities ``(n,)``, distances ``(n,)`` -> ``(n,)``."""
        logp = np.log(np.maximum(np.asarray(prob, np.float64), 1e-12))[:, None]
        x = np.concatenate([logp, kind_features(kinds)], 1)
        return self.answer(x) * self.in_domain_prob(distance, kinds)

    def save(self, folder: Path) -> None:
        (folder / CALIBRATION_FILE).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Calibration | None:
        file = folder / CALIBRATION_FILE
        if not file.is_file():
            return None
        data = json.loads(file.read_text())
        parts = {
            k: Logistic(tuple(data[k]["weights"]), data[k]["bias"])
            for k in ("in_domain", "caption", "answer")
        }
        return cls(
            **parts, alt_text_threshold=data["alt_text_threshold"], measured=data["measured"]
        )


def expected_calibration_error(confidence: np.ndarray, right: np.ndarray, bins: int = 10) -> float:
    """Sum over equal-width confidence bins of (share of outputs) x |accuracy - confidence|."""
    confidence, right = np.asarray(confidence, np.float64), np.asarray(right, np.float64)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(right[inside].mean() - confidence[inside].mean())
    return float(total)


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half."""
    positive, negative = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if not len(positive) or not len(negative):
        return float("nan")
    scores = np.concatenate([positive, negative])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks of ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    n_pos = len(positive)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * len(negative)))
