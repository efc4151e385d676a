"""How sure the model is of an output: a calibrated probability that it is right.

Two measured parts, multiplied:

- **in domain**: how far the input's media are from what the model was trained on. The mean
  media token (what cross-attention reads) and the tokens' spread, per kind of input (image,
  audio, both), are scored by their Mahalanobis distance to the training inputs' (in units of
  held-out in-domain inputs' median), and a logistic curve on the log distance, fitted on
  in-domain versus out-of-domain inputs (noise, blank frames, silence, photos the model never
  saw), says how likely the input is in domain (``MediaDistance``);
- **right if in domain**: a logistic regression on the output's own token log-probabilities
  (mean and minimum; for answers the answer's probability, with intercept and slopes per kind
  of input) and the kind of input, fitted per kind of output (caption, answer) on in-domain
  held-out data where right and wrong are known.
  For a model that reads real photos, an image nearer the photos' statistics than the
  synthetic pictures' is a kind of its own (``MediaDistance.assign``): the model is right
  about most synthetic scenes and fewer than half of the photos, and one curve for both made
  it under-confident on the one and over-confident on the other.

An out-of-domain input is taken to be answered wrongly, so ``confidence = in_domain * right``;
captions may instead have one joint curve over their token scores, kind, distance and the
recognizers' certainty, fitted on in-domain and out-of-domain captions together
(``Calibration.joint_caption``). Existence answers read off the recognizers (``mmllm.evidence``)
have a curve of their own on the recognizers' probability (``Calibration.existence``).
``scripts/calibrate.py`` fits them on held-out data, measures the expected calibration error
and the separation (AUROC) by cross-fitting (each record scored by curves fitted without it),
and stores the result with the checkpoint (``calibration.json``, ``media_stats.safetensors``).
A checkpoint without them gets the raw token probability, marked uncalibrated.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from encoders.recognizers import COCO_OFFSET
from mmllm.model.media import MediaBatch

CALIBRATION_FILE, STATS_FILE = "calibration.json", "media_stats.safetensors"
SHRINK = 0.1  # covariance shrinkage towards its diagonal: stable with few samples
KINDS = ("image", "audio", "image+audio")
# an image nearer the real photos' statistics than the synthetic pictures' (for a model that
# reads photos): its own kind, with its own distance unit and intercepts
PHOTO = "photo"
PER_KIND = (*KINDS, PHOTO)  # the kinds a per-kind curve has a part of its own for


def media_kind(has_image: bool, has_audio: bool) -> str | None:
    if has_image and has_audio:
        return "image+audio"
    return "image" if has_image else "audio" if has_audio else None


def kind_features(kinds: list[str | None]) -> np.ndarray:
    """Each input's kind as indicators ``(n, 3)``: audio only, image and audio, a photo (a
    model is surer of some kinds of input than of others)."""
    rows = [[k == "audio", k == "image+audio", k == PHOTO] for k in kinds]
    return np.array(rows, dtype=np.float64).reshape(len(kinds), 3)


def recognition_features(media: MediaBatch | None, rows: int) -> np.ndarray:
    """How sure the recognizers were about each row's pictures ``(rows, 2)``: the top ImageNet
    class probability and the top COCO object score (0 without recognitions). Real photos the
    teachers know score high; noise, blank frames and clip art do not."""
    out = torch.zeros(rows, 2, dtype=torch.float64)
    if media is None or media.recognitions is None or media.recognitions.shape[1] == 0:
        return out.numpy()
    found = media.recognitions.detach().double().cpu()  # (n_images, K, 6): label, score, box
    real = media.recognition_mask.detach().cpu()
    is_object = found[..., 0] >= COCO_OFFSET
    best = torch.stack(  # (n_images, 2): each picture's surest class and surest object
        [torch.where(real & kind, found[..., 1], 0.0).amax(-1) for kind in (~is_object, is_object)],
        -1,
    )
    index = media.image_index.cpu()[:, None].expand(-1, 2)  # each picture's row
    return out.scatter_reduce_(0, index, best, reduce="amax").numpy()


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

    def assign(
        self, pooled: torch.Tensor, kinds: list[str | None]
    ) -> tuple[torch.Tensor, list[str | None]]:
        """Distances ``(B,)`` as :meth:`__call__`, and the kinds with each image that lies
        nearer the photos' statistics than the synthetic pictures' (in their own units) made
        a :data:`PHOTO` (where there are photo statistics)."""
        kinds = list(kinds)
        distance = self(pooled, kinds)
        rows = [i for i, k in enumerate(kinds) if k == "image"]
        if PHOTO in self.stats and rows:
            as_photo = self(pooled[rows], [PHOTO] * len(rows))
            for j, i in enumerate(rows):
                if as_photo[j] < distance[i]:
                    kinds[i], distance[i] = PHOTO, as_photo[j]
        return distance, kinds

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


def log_distance(distance: np.ndarray) -> np.ndarray:
    """Distances ``(n,)`` (``MediaDistance``) -> their logarithms ``(n, 1)``, kept finite."""
    return np.log(np.clip(np.asarray(distance, np.float64), 1e-6, 1e12))[:, None]


def _recognized(recognized: np.ndarray | None, n: int) -> np.ndarray:
    return np.zeros((n, 2)) if recognized is None else np.asarray(recognized, np.float64)


def _only(columns: np.ndarray, kinds: list[str | None], kind: str) -> np.ndarray:
    """``columns`` ``(n, k)`` again, zero except for the rows of inputs of ``kind``."""
    return columns * np.array([k == kind for k in kinds], np.float64).reshape(-1, 1)


def _photo_slopes(columns: np.ndarray, kinds: list[str | None]) -> np.ndarray:
    """``columns`` ``(n, k)`` again, zero except for photos: photos get their own slopes (noise,
    clip art and blank frames can lie nearer the photos than the synthetic pictures too)."""
    return _only(columns, kinds, PHOTO)


def _evidence(
    distance: np.ndarray, kinds: list[str | None], recognized: np.ndarray | None
) -> np.ndarray:
    """What the media say, beside the kind ``(n, 3)``: log distance, recognizers' certainty."""
    return np.concatenate([log_distance(distance), _recognized(recognized, len(kinds))], 1)


def in_domain_features(
    distance: np.ndarray, kinds: list[str | None], recognized: np.ndarray | None = None
) -> np.ndarray:
    """Distances ``(n,)``, kinds and ``recognition_features`` -> the in-domain curve's
    features ``(n, 9)``: log distance, kind, recognizers, then the photos' own slopes."""
    evidence = _evidence(distance, kinds, recognized)
    parts = [evidence[:, :1], kind_features(kinds), evidence[:, 1:]]
    return np.concatenate([*parts, _photo_slopes(evidence, kinds)], 1)


def caption_features(
    features: np.ndarray,
    distance: np.ndarray,
    kinds: list[str | None],
    recognized: np.ndarray | None = None,
    joint: bool = True,
) -> np.ndarray:
    """A caption curve's features. Joint ``(n, 11)``: token features ``(n, 2)``, the kind of
    input, the log distance and the recognizers' certainty, then the photos' own slopes on
    those three. Not joint ``(n, 7)``: token features, kind and the recognizers' certainty
    (the distance is in the in-domain factor the curve is multiplied by)."""
    tokens = np.asarray(features, np.float64)
    if not joint:
        return np.concatenate(
            [tokens, kind_features(kinds), _recognized(recognized, len(kinds))], 1
        )
    evidence = _evidence(distance, kinds, recognized)
    parts = [tokens, kind_features(kinds), evidence]
    return np.concatenate([*parts, _photo_slopes(evidence, kinds)], 1)


def in_domain_prob(
    curve: Logistic,
    distance: np.ndarray,
    kinds: list[str | None],
    recognized: np.ndarray | None = None,
) -> np.ndarray:
    """Distances ``(n,)`` (``MediaDistance``) of inputs of ``kinds`` -> the probability that
    each is in domain (0 for a kind of input never trained on; 1 for text alone)."""
    d = np.asarray(distance, np.float64)
    p = curve(in_domain_features(d, kinds, recognized))
    p = np.where(np.isfinite(d), p, 0.0)
    return np.where([k is None for k in kinds], 1.0, p)


def _distance(x: torch.Tensor, entry: dict[str, torch.Tensor]) -> torch.Tensor:
    centred = x - entry["mean"]
    return ((centred @ entry["precision"]) * centred).sum(-1).clamp(min=0).sqrt()


@dataclass(frozen=True)
class Calibration:
    """The fitted parts (see the module docstring) and the threshold ``mmllm alt-text`` uses
    by default; ``measured`` keeps the figures of the fit (ECE, AUROC, sizes)."""

    in_domain: Logistic  # in_domain_features (9)
    caption: Logistic  # caption_features (11), or 7 of them if not joint
    answer: Logistic  # answer_features (8), or answer_features_per_kind (16)
    alt_text_threshold: float
    measured: dict
    # the caption curve reads the log distance itself and is fitted on in-domain and
    # out-of-domain captions together, instead of being multiplied by the in-domain probability
    joint_caption: bool = False
    # existence answers read off the recognizers (``mmllm.evidence``): existence_features (4)
    existence: Logistic | None = None
    # the answer curve has a part of its own per kind of input (answer_features_per_kind)
    answer_per_kind: bool = False

    def in_domain_prob(
        self, distance: np.ndarray, kinds: list[str | None], recognized: np.ndarray | None = None
    ) -> np.ndarray:
        return in_domain_prob(self.in_domain, distance, kinds, recognized)

    def caption_confidence(
        self,
        features: np.ndarray,
        distance: np.ndarray,
        kinds: list[str | None],
        recognized: np.ndarray | None = None,
    ) -> np.ndarray:
        """Token features ``(n, 2)`` (``token_features``), distances ``(n,)``, kinds and
        ``recognition_features`` ``(n, 2)`` -> ``(n,)``."""
        x = caption_features(features, distance, kinds, recognized, self.joint_caption)
        if self.joint_caption:
            return self.caption(x)
        return self.caption(x) * self.in_domain_prob(distance, kinds, recognized)

    def answer_confidence(
        self,
        prob: np.ndarray,
        distance: np.ndarray,
        kinds: list[str | None],
        recognized: np.ndarray | None = None,
    ) -> np.ndarray:
        """Answer probabilities ``(n,)``, distances ``(n,)``, kinds, ``recognition_features``
        -> ``(n,)``."""
        features = answer_features_per_kind if self.answer_per_kind else answer_features
        x = features(prob, kinds, recognized)
        return self.answer(x) * self.in_domain_prob(distance, kinds, recognized)

    def existence_confidence(
        self, prob: np.ndarray, yes: np.ndarray, known: np.ndarray
    ) -> np.ndarray | None:
        """Existence answers read off the recognizers: their probabilities ``(n,)``, whether
        each says "yes" and whether the recognizers know the thing asked about -> ``(n,)``;
        None without an existence curve."""
        if self.existence is None:
            return None
        return self.existence(existence_features(prob, yes, known))

    def save(self, folder: Path) -> None:
        (folder / CALIBRATION_FILE).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Calibration | None:
        file = folder / CALIBRATION_FILE
        if not file.is_file():
            return None
        data = json.loads(file.read_text())
        # calibrations fitted before the photo kind and the recognition features have fewer
        # weights (the new features come last): 0 for each
        joint = bool(data.get("joint_caption", False))
        per_kind = bool(data.get("answer_per_kind", False))
        answer_size = 4 * len(PER_KIND) if per_kind else 8
        sizes = {"in_domain": 9, "caption": 11 if joint else 7, "answer": answer_size}
        parts = {
            k: Logistic(_padded(data[k]["weights"], n), data[k]["bias"]) for k, n in sizes.items()
        }
        found = data.get("existence")
        return cls(
            **parts,
            alt_text_threshold=data["alt_text_threshold"],
            measured=data["measured"],
            joint_caption=joint,
            existence=None if found is None else Logistic(tuple(found["weights"]), found["bias"]),
            answer_per_kind=per_kind,
        )


def answer_features(
    prob: np.ndarray, kinds: list[str | None], recognized: np.ndarray | None = None
) -> np.ndarray:
    """An answer curve's features ``(n, 8)``: log answer probability, kind, recognizers, and
    the photos' own slopes on the recognizers."""
    logp = np.log(np.maximum(np.asarray(prob, np.float64), 1e-12))[:, None]
    seen = _recognized(recognized, len(kinds))
    return np.concatenate([logp, kind_features(kinds), seen, _photo_slopes(seen, kinds)], 1)


def answer_features_per_kind(
    prob: np.ndarray, kinds: list[str | None], recognized: np.ndarray | None = None
) -> np.ndarray:
    """A per-kind answer curve's features ``(n, 16)``: for each kind of :data:`PER_KIND`, an
    indicator and, for answers about that kind of input only, the log answer probability and
    the recognizers' certainty. Each kind gets its own intercept and slopes: an answer's
    probability means something else about a photo than about a synthetic scene."""
    logp = np.log(np.maximum(np.asarray(prob, np.float64), 1e-12))[:, None]
    columns = np.concatenate(
        [np.ones_like(logp), logp, _recognized(recognized, len(kinds))], 1
    )  # (n, 4)
    return np.concatenate([_only(columns, kinds, kind) for kind in PER_KIND], 1)


def existence_features(prob: np.ndarray, yes: np.ndarray, known: np.ndarray) -> np.ndarray:
    """An existence curve's features ``(n, 4)``: the log-odds of the recognizers' probability
    for a "yes" and for a "no" about a thing they know, and an indicator of each. A "no" about
    a thing they cannot name has none of these: the curve's bias is its confidence."""
    p = np.clip(np.asarray(prob, np.float64), 1e-6, 1 - 1e-6)
    yes = np.asarray(yes, np.float64)
    known_no = (1 - yes) * np.asarray(known, np.float64)
    logit = np.log(p / (1 - p))
    return np.stack([logit * yes, logit * known_no, yes, known_no], 1)


def _padded(weights: list[float], n: int) -> tuple[float, ...]:
    return tuple(weights) + (0.0,) * (n - len(weights))


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


def checkpoint_trust(folder: Path) -> tuple[Calibration | None, MediaDistance | None]:
    """A checkpoint's calibration and media statistics (None for what it does not store)."""
    stats = folder / STATS_FILE
    return Calibration.load(folder), MediaDistance.load(stats) if stats.is_file() else None
