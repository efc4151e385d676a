"""Calibrate a checkpoint's confidence (``mmllm.confidence``) and measure it.

    python scripts/stress_set.py --out stress --photos photos/data.jsonl
    python scripts/calibrate.py --checkpoint checkpoints/mmllm-tiny --stress stress/stress.jsonl \
        --out runs/calibration
    python scripts/calibrate.py --checkpoint checkpoints/mmllm-real --stress stress/stress.jsonl \
        --photos photos/data.jsonl --out runs/calibration-real

Two steps. **Collect** runs the model on every input once: the media statistics are fitted
(on ``synthetic:train``; with ``--photos``, on a quarter of the photos too), then each held-out
record (``synthetic:heldout`` and the other photos) and each stress input is encoded, captioned
and asked its question as ``ask`` answers it. What it did is saved in ``--out``
(``outputs.npz``, ``outputs.json``, ``media_stats.safetensors``); ``--reuse`` fits again from
there without the model.

**Fit** the curves (in-domain, caption, answer, and the existence answers read off the
recognizers: ``mmllm.evidence``) and measure them by cross-fitting: the records are split into
``--folds`` folds (a photo's caption and questions stay in one fold, by picture), each fold's
confidences come from curves fitted on the other folds, and the expected calibration error per
domain, the in-domain separation (AUROC) and the alt-text threshold's precision are measured on
those out-of-fold confidences, so every record is measured once and never by a curve fitted on
it. The curves that ship are then fitted on all of them.

With ``--photos`` (``mmllm data photos``' data.jsonl) real photos are a domain too, for a model
that reads them, and the stress set's own photos are no longer counted out of domain. A photo's
caption or answer is right when it names an acceptable noun (``mmllm.eval.photos``).

Writes ``calibration.json`` and ``media_stats.safetensors`` into the checkpoint, and
``report.json`` and ``reliability.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import mmllm
from mmllm.confidence import (
    PHOTO,
    STATS_FILE,
    Calibration,
    Logistic,
    MediaDistance,
    answer_features_per_kind,
    auroc,
    caption_features,
    existence_features,
    expected_calibration_error,
    in_domain_features,
    in_domain_prob,
    media_kind,
    pooled_tokens,
    recognition_features,
)
from mmllm.data.jsonl import read_jsonl
from mmllm.data.sources import build_source
from mmllm.eval.degenerate import degenerate_reason
from mmllm.eval.metrics import caption_attributes_match, hallucinated, normalize_answer
from mmllm.eval.photos import accepted
from mmllm.generate import SamplingConfig
from mmllm.weights.checkpoint import resolve_checkpoint

ALT_TEXT_PRECISION = 0.9  # share of written alt texts that must be right
ECE_BINS = 10


def kind_of(record) -> str:
    """The kind of a record's media (image, audio, image+audio)."""
    return media_kind(bool(record.images), bool(record.audio))


def fitted_kind(record) -> str:
    """The kind whose statistics a record's media belong to: real photos are their own."""
    return PHOTO if (record.category or "").startswith("photo/") else kind_of(record)


def is_right(record, text: str) -> bool:
    """Whether a caption or answer is right: an acceptable noun for a real photo, the
    attributes of a synthetic caption, the answer itself for a synthetic question."""
    if record.accept:
        return accepted(record, text)
    if record.task == "caption":
        return caption_attributes_match(text, record.target, record.category)
    return normalize_answer(text) == normalize_answer(record.target)


def photo_folds(records) -> np.ndarray:
    """Each photo record's picture number ``(n,)``: a caption and the questions about one
    picture share it (folds split by picture)."""
    pictures = sorted({str(r.images[0]) for r in records})
    group = {p: i for i, p in enumerate(pictures)}
    return np.array([group[str(r.images[0])] for r in records], dtype=np.int64)


def pooled(api, records, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Each record's mean media token ``(n, D)`` (what ``MediaDistance`` scores) and how sure
    the recognizers were ``(n, 2)`` (``recognition_features``)."""
    out, recognized = [], []
    for start in tqdm(range(0, len(records), batch), desc="media", unit="batch"):
        chunk = records[start : start + batch]
        media = api._media([r.images for r in chunk], [r.audio for r in chunk])
        with torch.inference_mode():
            tokens, mask = api.model.encode_media(media)
        out.append(pooled_tokens(tokens.float(), mask).numpy())
        recognized.append(recognition_features(media, len(chunk)))
    return np.concatenate(out), np.concatenate(recognized)


def captions(api, records, batch: int = 32) -> tuple[list[str], np.ndarray]:
    """Greedy captions and their token features ``(n, 2)``: mean and minimum log-probability."""
    texts, features = [], []
    sampling = SamplingConfig(max_new_tokens=48)
    for start in tqdm(range(0, len(records), batch), desc="captions", unit="batch"):
        chunk = records[start : start + batch]
        out = api.generate_batch(
            [r.prompt for r in chunk], [r.images for r in chunk], [r.audio for r in chunk], sampling
        )
        texts += [t.strip() for t in out]
        features += [list(t.token_scores) for t in out]
    return texts, np.array(features).reshape(len(texts), 2)


def answers(api, records) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each question's answer as ``ask`` gives it and its probability, and ``(n, 3)``: whether
    it was read off the recognizers' findings (an existence question about a photo:
    ``mmllm.evidence``), whether that says "yes", whether they know the thing asked about."""
    texts, probs, evidence = [], [], []
    for r in tqdm(records, desc="answers", unit="question"):
        image = r.images[0] if r.images else None
        answer = api.ask(image, r.prompt, r.audio[0] if r.audio else None)
        found = answer.evidence
        texts.append(answer.text)
        probs.append(answer.prob)
        evidence.append(
            [
                found is not None,
                found is not None and found.answer == "yes",
                bool(found and found.known),
            ]
        )
    return texts, np.array(probs), np.array(evidence, dtype=bool).reshape(len(texts), 3)


@dataclass
class Outputs:
    """What the model did on every held-out record and stress input (the collect step).

    Held-out records ``(n,)``: ``kinds`` as assigned at inference, ``distance``, ``recognized``
    ``(n, 2)``, ``group`` (a photo's picture, else the record itself), ``domain`` (a
    synthetic category or "photo"), ``task``. Captions (``cap_*``, ``cap_index`` into the
    records): token features ``(c, 2)``, right or not, text. Answers (``vqa_*``): probability,
    right or not, text, and the evidence ``(q, 3)`` of ``answers``. Stress inputs
    (``stress_*``): kinds, distance, recognized, caption token features, text, kind of input."""

    arrays: dict[str, np.ndarray]
    texts: dict[str, list]

    def __getattr__(self, name: str):
        if name in ("arrays", "texts"):
            raise AttributeError(name)
        return self.arrays[name] if name in self.arrays else self.texts[name]

    def save(self, folder: Path) -> None:
        np.savez(folder / "outputs.npz", **self.arrays)
        (folder / "outputs.json").write_text(json.dumps(self.texts) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Outputs:
        with np.load(folder / "outputs.npz") as data:
            arrays = {k: data[k] for k in data.files}
        return cls(arrays, json.loads((folder / "outputs.json").read_text()))


def domain_of(records) -> list[str]:
    """A synthetic category, "photo", or a stress kind, per record."""
    names = [r.category or kind_of(r) for r in records]
    return ["photo" if n.startswith("photo/") else n for n in names]


def collect(api, args) -> tuple[Outputs, MediaDistance]:
    """Run the model once on everything the fit and the measurement need (see the module
    docstring); the media statistics are fitted here."""
    photos = read_jsonl(args.photos) if args.photos else []
    pictures = photo_folds(photos) if photos else np.zeros(0, np.int64)
    train = build_source("synthetic:train", seed=0, shuffle=False)
    train = [train[i] for i in range(args.n_train)]
    stats_photos = {
        str(r.images[0]): r for r, g in zip(photos, pictures, strict=True) if g % 4 == 0
    }
    train += list(stats_photos.values())
    if args.keep_stats:  # the checkpoint's own statistics, units and all
        distance = MediaDistance.load(resolve_checkpoint(args.checkpoint) / STATS_FILE)
    else:
        train_pooled, _ = pooled(api, train)
        kinds = np.array([fitted_kind(r) for r in train])
        distance = MediaDistance.fit(
            {k: torch.from_numpy(train_pooled[kinds == k]) for k in sorted(set(kinds))}
        )

    source = build_source("synthetic:heldout", seed=0, shuffle=False)
    held = [source[i] for i in range(args.n)]
    held += [r for r, g in zip(photos, pictures, strict=True) if g % 4]
    # folds split by picture: the held photos' pictures numbered 0, 1, 2... after the records
    _, picture = np.unique(pictures[pictures % 4 > 0], return_inverse=True)
    group = np.concatenate([np.arange(args.n), args.n + picture.reshape(-1)])
    stress = [r for r in read_jsonl(args.stress) if not (photos and r.category == "stress/photo")]
    held_pooled, r_held = pooled(api, held)
    if not args.keep_stats:  # each kind's unit: the median distance of its held-out inputs
        distance.set_units(torch.from_numpy(held_pooled), [fitted_kind(r) for r in held])
    d_held, held_kinds = distance.assign(torch.from_numpy(held_pooled), [kind_of(r) for r in held])
    stress_pooled, r_stress = pooled(api, stress)
    d_stress, stress_kinds = distance.assign(
        torch.from_numpy(stress_pooled), [kind_of(r) for r in stress]
    )

    # which pictures are photos, as at inference: their captions and answers to "what is
    # this?" are checked against the findings (mmllm.grounding), existence answers read off
    api.media_distance = distance
    cap_index = np.array([i for i, r in enumerate(held) if r.task == "caption"], np.int64)
    cap_records = [held[i] for i in cap_index]
    cap_text, cap_feat = captions(api, cap_records)
    stress_text, stress_feat = captions(api, stress)
    vqa_index = np.array([i for i, r in enumerate(held) if r.task == "vqa"], np.int64)
    vqa_records = [held[i] for i in vqa_index]
    vqa_text, vqa_prob, vqa_evidence = answers(api, vqa_records)
    api.media_distance = None
    hallucination = [
        hallucinated(p, r.target, r.category)
        for p, r in zip(cap_text, cap_records, strict=True)
        if not r.accept
    ]
    arrays = {
        "distance": d_held.numpy(),
        "recognized": r_held,
        "group": group,
        "cap_index": cap_index,
        "cap_feat": cap_feat,
        "cap_right": np.array([is_right(r, t) for t, r in zip(cap_text, cap_records, strict=True)]),
        "vqa_index": vqa_index,
        "vqa_prob": vqa_prob,
        "vqa_right": np.array([is_right(r, t) for t, r in zip(vqa_text, vqa_records, strict=True)]),
        "vqa_evidence": vqa_evidence,
        "stress_distance": d_stress.numpy(),
        "stress_recognized": r_stress,
        "stress_feat": stress_feat,
        "hallucinated": np.array(hallucination, dtype=bool),
    }
    texts = {
        "kinds": held_kinds,
        "domain": domain_of(held),
        "cap_text": cap_text,
        "vqa_text": vqa_text,
        "stress_kinds": stress_kinds,
        "stress_text": stress_text,
        "stress_domain": domain_of(stress),
        "train_inputs": [len(train)],
    }
    return Outputs(arrays, texts), distance


def fit(out: Outputs, held: np.ndarray, stress: np.ndarray, form: str) -> Calibration:
    """The curves, fitted on the held-out records and stress inputs the masks select
    (``(n,)`` and ``(s,)`` of bool); the alt-text threshold is left at 1."""
    kinds, s_kinds = out.kinds, out.stress_kinds

    def pick(values, mask):
        return [v for v, m in zip(values, mask, strict=True) if m]

    x = np.concatenate(
        [
            in_domain_features(out.distance[held], pick(kinds, held), out.recognized[held]),
            in_domain_features(
                out.stress_distance[stress], pick(s_kinds, stress), out.stress_recognized[stress]
            ),
        ]
    )
    in_domain = Logistic.fit(x, np.concatenate([np.ones(held.sum()), np.zeros(stress.sum())]))

    ci, vi = out.cap_index, out.vqa_index
    cap_kinds, vqa_kinds = [kinds[i] for i in ci], [kinds[i] for i in vi]
    cap_fit = held[ci]
    if form == "joint":  # one curve over in-domain captions (right or wrong) and stress ones
        cap_x = caption_features(out.cap_feat, out.distance[ci], cap_kinds, out.recognized[ci])
        stress_x = caption_features(
            out.stress_feat, out.stress_distance, s_kinds, out.stress_recognized
        )
        caption = Logistic.fit(
            np.concatenate([cap_x[cap_fit], stress_x[stress]]),
            np.concatenate([out.cap_right[cap_fit], np.zeros(stress.sum())]),
        )
    else:  # a curve on in-domain captions, times the in-domain probability
        p_cap = in_domain_prob(in_domain, out.distance[ci], cap_kinds, out.recognized[ci])
        cap_x = caption_features(
            out.cap_feat, out.distance[ci], cap_kinds, out.recognized[ci], joint=False
        )
        caption = Logistic.fit(cap_x[cap_fit], out.cap_right[cap_fit], scale=p_cap[cap_fit])

    read_off, says_yes, known = out.vqa_evidence.T
    p_vqa = in_domain_prob(in_domain, out.distance[vi], vqa_kinds, out.recognized[vi])
    vqa_x = answer_features_per_kind(out.vqa_prob, vqa_kinds, out.recognized[vi])
    own = held[vi] & ~read_off  # the model's own answers
    answer = Logistic.fit(vqa_x[own], out.vqa_right[own], scale=p_vqa[own])
    existence = None
    found = held[vi] & read_off
    if found.sum() >= 10:
        existence = Logistic.fit(
            existence_features(out.vqa_prob, says_yes, known)[found], out.vqa_right[found]
        )
    return Calibration(
        in_domain,
        caption,
        answer,
        1.0,
        {},
        joint_caption=form == "joint",
        existence=existence,
        answer_per_kind=True,
    )


def confidences(calibration: Calibration, out: Outputs) -> dict[str, np.ndarray]:
    """Every output's confidence under ``calibration``: captions, answers, stress captions,
    and the in-domain probability of the held-out and stress inputs."""
    ci, vi = out.cap_index, out.vqa_index
    cap_kinds, vqa_kinds = [out.kinds[i] for i in ci], [out.kinds[i] for i in vi]
    read_off, says_yes, known = out.vqa_evidence.T
    vqa = calibration.answer_confidence(
        out.vqa_prob, out.distance[vi], vqa_kinds, out.recognized[vi]
    )
    found = calibration.existence_confidence(out.vqa_prob, says_yes, known)
    return {
        "caption": calibration.caption_confidence(
            out.cap_feat, out.distance[ci], cap_kinds, out.recognized[ci]
        ),
        "answer": np.where(read_off, out.vqa_prob if found is None else found, vqa),
        "stress": calibration.caption_confidence(
            out.stress_feat, out.stress_distance, out.stress_kinds, out.stress_recognized
        ),
        "held_in_domain": calibration.in_domain_prob(out.distance, out.kinds, out.recognized),
        "stress_in_domain": calibration.in_domain_prob(
            out.stress_distance, out.stress_kinds, out.stress_recognized
        ),
    }


def cross_fitted(
    out: Outputs, folds: int, form: str
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Out-of-fold confidences (``confidences``' keys): each fold's from curves fitted on the
    others; and each held-out record's and stress input's fold."""
    held_fold = out.group % folds
    stress_fold = np.arange(len(out.stress_text)) % folds
    result: dict[str, np.ndarray] = {}
    for k in tqdm(range(folds), desc="cross-fit", unit="fold"):
        calibration = fit(out, held_fold != k, stress_fold != k, form)
        conf = confidences(calibration, out)
        rows = {
            "caption": held_fold[out.cap_index] == k,
            "answer": held_fold[out.vqa_index] == k,
            "stress": stress_fold == k,
            "held_in_domain": held_fold == k,
            "stress_in_domain": stress_fold == k,
        }
        for name, values in conf.items():
            result.setdefault(name, np.zeros_like(values))[rows[name]] = values[rows[name]]
    return result, held_fold, stress_fold


def ece_noise_floor(conf: np.ndarray, draws: int = 200) -> float:
    """The mean ECE a perfectly calibrated model would measure with these confidences
    ``(n,)``: outcomes drawn from the confidences themselves. With few outputs a bin, even
    that is well above 0."""
    rng = np.random.default_rng(0)
    return float(
        np.mean(
            [
                expected_calibration_error(conf, rng.random(len(conf)) < conf, ECE_BINS)
                for _ in range(draws)
            ]
        )
    )


def alt_text_threshold(conf: np.ndarray, right: np.ndarray) -> float:
    """The lowest threshold at which at least ``ALT_TEXT_PRECISION`` of the written captions
    are right (1.0 where none is)."""
    for t in np.linspace(0.05, 0.99, 95):
        kept = conf >= t
        if kept.sum() >= 20 and right[kept].mean() >= ALT_TEXT_PRECISION:
            return float(round(t, 2))
    return 1.0


def reliability_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="perfect")
    edges = np.linspace(0, 1, ECE_BINS + 1)
    for name, (conf, right) in curves.items():
        xs, ys = [], []
        for lo, hi in itertools.pairwise(edges):
            inside = (conf >= lo) & ((conf < hi) | (hi == 1))
            if inside.sum() >= 5:
                xs.append(conf[inside].mean())
                ys.append(right[inside].mean())
        ece = expected_calibration_error(conf, right, ECE_BINS)
        ax.plot(xs, ys, marker="o", label=f"{name} (ECE {ece:.3f}, n={len(conf)})")
    ax.set(
        xlabel="confidence",
        ylabel="share right",
        xlim=(0, 1),
        ylim=(0, 1),
        title="reliability, out-of-fold (cross-fitted)",
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def measure(out: Outputs, folds: int, form: str, plot: Path | None) -> tuple[dict, float]:
    """The cross-fitted measurements (see the module docstring) and the alt-text threshold
    chosen on all out-of-fold captions."""
    conf, held_fold, stress_fold = cross_fitted(out, folds, form)
    domain = np.array(out.domain)
    cap_dom, vqa_dom = domain[out.cap_index], domain[out.vqa_index]
    read_off = out.vqa_evidence[:, 0]
    stress_wrong = np.zeros(len(out.stress_text))
    sets = (
        [
            (f"captions/{d}", conf["caption"], out.cap_right, cap_dom == d)
            for d in sorted(set(cap_dom))
        ]
        + [
            (f"answers/{d}", conf["answer"], out.vqa_right, vqa_dom == d)
            for d in sorted(set(vqa_dom))
        ]
        + [("answers/photo, read off the recognizers", conf["answer"], out.vqa_right, read_off)]
        + [
            (
                "answers/photo, the model's own",
                conf["answer"],
                out.vqa_right,
                (vqa_dom == "photo") & ~read_off,
            )
        ]
        + [
            (
                "captions/out-of-domain",
                conf["stress"],
                stress_wrong,
                np.ones(len(stress_wrong), bool),
            )
        ]
    )
    curves, ece = {}, {}
    for name, c, right, mask in sets:
        right = right.astype(np.float64)
        if not mask.any():
            continue
        curves[name] = (c[mask], right[mask])
        ece[name] = {
            "ece": expected_calibration_error(c[mask], right[mask], ECE_BINS),
            "ece_if_calibrated": ece_noise_floor(c[mask]),
            "n": int(mask.sum()),
            "accuracy": float(right[mask].mean()),
            "mean_confidence": float(c[mask].mean()),
        }
    pool_conf = np.concatenate([conf["caption"], conf["stress"]])
    pool_right = np.concatenate([out.cap_right.astype(np.float64), stress_wrong])
    pool_fold = np.concatenate([held_fold[out.cap_index], stress_fold])
    in_domain = np.concatenate(
        [np.ones(len(out.cap_index), bool), np.zeros(len(stress_wrong), bool)]
    )
    # the threshold's precision, measured where it was not chosen: chosen on even folds,
    # measured on odd ones
    choose, check = pool_fold % 2 == 0, pool_fold % 2 == 1
    split = alt_text_threshold(pool_conf[choose], pool_right[choose])
    kept = check & (pool_conf >= split)
    threshold = alt_text_threshold(pool_conf, pool_right)
    stress_domain = np.array(out.stress_domain)
    p_held, p_stress = conf["held_in_domain"], conf["stress_in_domain"]
    measured = {
        "ece": ece,
        "ece_bins": ECE_BINS,
        "folds": folds,
        "in_domain_auroc": auroc(p_held, p_stress),
        "auroc_by_stress_kind": {
            kind: auroc(p_held, p_stress[stress_domain == kind])
            for kind in sorted(set(stress_domain))
        },
        "alt_text": {
            "threshold": threshold,
            "threshold_chosen_on_even_folds": split,
            "precision": float(pool_right[kept].mean()) if kept.any() else None,
            "written_in_domain": float(kept[check & in_domain].sum() / (check & in_domain).sum()),
            "written_out_of_domain": float(
                kept[check & ~in_domain].sum() / max(1, (check & ~in_domain).sum())
            ),
        },
        "stress_degenerate": {
            "count": sum(degenerate_reason(t) is not None for t in out.stress_text),
            "n": len(out.stress_text),
            "examples": [t for t in out.stress_text if degenerate_reason(t)][:10],
        },
        "hallucination": {
            "rate": float(out.hallucinated.mean()) if len(out.hallucinated) else 0.0,
            "n": len(out.hallucinated),
        },
        "sizes": {
            "held_out": len(out.domain),
            "stress": len(out.stress_text),
            "train_inputs": out.train_inputs[0],
        },
    }
    if plot is not None:
        reliability_plot(curves, plot)
    return measured, threshold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--stress", help="scripts/stress_set.py's stress.jsonl")
    parser.add_argument("--n", type=int, default=2000, help="held-out records")
    parser.add_argument("--n-train", type=int, default=2000, help="training inputs for the stats")
    parser.add_argument("--photos", help="real photos with acceptable nouns, as a domain")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=4, help="cross-fitting folds")
    parser.add_argument(
        "--keep-stats",
        action="store_true",
        help="keep the checkpoint's media statistics (fitted on the same inputs before) "
        "instead of fitting them again",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="fit again from the outputs a previous run saved in --out, without the model",
    )
    parser.add_argument(
        "--caption-curve",
        choices=["product", "joint"],
        default="product",
        help="captions' confidence: a curve on in-domain captions times the in-domain "
        "probability (product), or one curve over in-domain and out-of-domain captions (joint)",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = resolve_checkpoint(args.checkpoint)
    if args.reuse:
        out = Outputs.load(args.out)
        distance = MediaDistance.load(args.out / STATS_FILE)
    else:
        if not args.stress:
            parser.error("--stress is needed to collect (or --reuse a previous collection)")
        api = mmllm.load(folder, device="cpu")
        api.calibration, api.media_distance = None, None  # raw scores while fitting
        out, distance = collect(api, args)
        out.save(args.out)
        distance.save(args.out / STATS_FILE)
    form = args.caption_curve
    measured, threshold = measure(out, args.folds, form, args.out / "reliability.png")
    everything = np.ones(len(out.domain), bool), np.ones(len(out.stress_text), bool)
    shipped = fit(out, *everything, form)
    calibration = replace(shipped, alt_text_threshold=threshold, measured=measured)
    calibration.save(folder)
    distance.save(folder / STATS_FILE)
    (args.out / "report.json").write_text(json.dumps(measured, indent=1) + "\n")
    print(json.dumps(measured, indent=1))


if __name__ == "__main__":
    main()
