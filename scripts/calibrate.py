"""Calibrate a checkpoint's confidence (``mmllm.confidence``) and measure it.

    python scripts/stress_set.py --out stress --photos photos/data.jsonl
    python scripts/calibrate.py --checkpoint checkpoints/mmllm-tiny --stress stress/stress.jsonl \
        --out runs/calibration
    python scripts/calibrate.py --checkpoint checkpoints/mmllm-real --stress stress/stress.jsonl \
        --photos photos/data.jsonl --out runs/calibration-real

With ``--photos`` (``mmllm data photos``' data.jsonl) real photos are a domain too, for a model
that reads them: a quarter of the pictures join the media statistics, a quarter the fit and half
the measurement (split by picture, so a photo's caption and questions stay together), and the
stress set's own photos are no longer counted out of domain. A photo's caption or answer is
right when it names an acceptable noun (``mmllm.eval.photos``).

Fits, on even-numbered records: the media statistics (on ``synthetic:train``), the in-domain
curve (held-out in-domain inputs against the stress set's), and the caption and answer curves
(in-domain held-out outputs, right or wrong). Measures, on odd-numbered records: the expected
calibration error per domain (an existence question about a photo is answered off the
recognizers, as ``ask`` does, and its probability is its confidence: ``mmllm.evidence``; the
answer curve is fitted on the model's own answers), the in-domain separation (AUROC), the
alt-text threshold's
precision and coverage, and the hallucination rate of captions. Writes ``calibration.json``
and ``media_stats.safetensors`` into the checkpoint, and ``report.json`` and
``reliability.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
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
    answer_features,
    auroc,
    caption_features,
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
    """Each photo record's fold by its picture: 0 media statistics, 1 fit, 2 measure."""
    pictures = sorted({str(r.images[0]) for r in records})
    group = {p: i for i, p in enumerate(pictures)}
    return np.array([(0, 2, 1, 2)[group[str(r.images[0])] % 4] for r in records])


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
    return texts, np.array(features)


def answers(api, records) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each question's answer as ``ask`` gives it, its probability, and whether it was read
    off the recognizers' findings (an existence question about a photo: ``mmllm.evidence``;
    its probability is its confidence, not fitted here)."""
    texts, probs, read_off = [], [], []
    for r in tqdm(records, desc="answers", unit="question"):
        image = r.images[0] if r.images else None
        found = api.existence_answer(image, r.prompt) if image is not None and not r.audio else None
        answer = found or api.ask(image, r.prompt, r.audio[0] if r.audio else None)
        texts.append(answer.text)
        probs.append(answer.prob)
        read_off.append(found is not None)
    return texts, np.array(probs), np.array(read_off)


def reliability_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="perfect")
    edges = np.linspace(0, 1, 11)
    for name, (conf, right) in curves.items():
        xs, ys = [], []
        for lo, hi in itertools.pairwise(edges):
            inside = (conf >= lo) & ((conf < hi) | (hi == 1))
            if inside.sum() >= 5:
                xs.append(conf[inside].mean())
                ys.append(right[inside].mean())
        ece = expected_calibration_error(conf, right)
        ax.plot(xs, ys, marker="o", label=f"{name} (ECE {ece:.3f}, n={len(conf)})")
    ax.set(
        xlabel="confidence",
        ylabel="share right",
        xlim=(0, 1),
        ylim=(0, 1),
        title="reliability on held-out data",
    )
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--stress", required=True, help="scripts/stress_set.py's stress.jsonl")
    parser.add_argument("--n", type=int, default=2000, help="held-out records")
    parser.add_argument("--n-train", type=int, default=2000, help="training inputs for the stats")
    parser.add_argument("--photos", help="real photos with acceptable nouns, as a domain")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--caption-curve",
        choices=["joint", "product"],
        default="joint",
        help="captions' confidence: one curve with the out-of-domain captions (joint), or a "
        "curve on in-domain captions times the in-domain probability (product)",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = resolve_checkpoint(args.checkpoint)
    api = mmllm.load(folder, device="cpu")
    api.calibration, api.media_distance = None, None  # raw scores while fitting

    photos = read_jsonl(args.photos) if args.photos else []
    folds = photo_folds(photos) if photos else np.zeros(0, int)
    train = build_source("synthetic:train", seed=0, shuffle=False)
    train = [train[i] for i in range(args.n_train)]
    stats_photos = {str(r.images[0]): r for r, f in zip(photos, folds, strict=True) if f == 0}
    train += list(stats_photos.values())
    train_pooled, _ = pooled(api, train)
    kinds = np.array([fitted_kind(r) for r in train])
    distance = MediaDistance.fit(
        {k: torch.from_numpy(train_pooled[kinds == k]) for k in sorted(set(kinds))}
    )

    source = build_source("synthetic:heldout", seed=0, shuffle=False)
    held = [source[i] for i in range(args.n)]
    held += [r for r, f in zip(photos, folds, strict=True) if f > 0]
    stress = [r for r in read_jsonl(args.stress) if not (photos and r.category == "stress/photo")]

    def distances(records, vectors):  # and the kinds as assigned (as at inference)
        found, assigned = distance.assign(torch.from_numpy(vectors), [kind_of(r) for r in records])
        return found.numpy(), assigned

    fold_h = np.concatenate([np.arange(args.n) % 2 + 1, folds[folds > 0]])
    fit_h, test_h = fold_h == 1, fold_h == 2
    held_pooled, r_held = pooled(api, held)
    distance.set_units(
        torch.from_numpy(held_pooled[fit_h]),
        [fitted_kind(r) for r, f in zip(held, fit_h, strict=True) if f],
    )
    d_held, held_kinds = distances(held, held_pooled)
    stress_pooled, r_stress = pooled(api, stress)
    d_stress, stress_kinds = distances(stress, stress_pooled)
    fit_s, test_s = np.arange(len(stress)) % 2 == 0, np.arange(len(stress)) % 2 == 1
    x = np.concatenate(
        [
            in_domain_features(
                d_held[fit_h],
                [k for k, f in zip(held_kinds, fit_h, strict=True) if f],
                r_held[fit_h],
            ),
            in_domain_features(
                d_stress[fit_s],
                [k for k, f in zip(stress_kinds, fit_s, strict=True) if f],
                r_stress[fit_s],
            ),
        ]
    )
    y = np.concatenate([np.ones(fit_h.sum()), np.zeros(fit_s.sum())])
    in_domain = Logistic.fit(x, y)

    cap_idx = [i for i, r in enumerate(held) if r.task == "caption"]
    cap_records = [held[i] for i in cap_idx]
    cap_text, cap_feat = captions(api, cap_records)
    cap_right = np.array(
        [is_right(r, p) for p, r in zip(cap_text, cap_records, strict=True)], float
    )
    stress_text, stress_feat = captions(api, stress)
    vqa_idx = [i for i, r in enumerate(held) if r.task == "vqa"]
    vqa_records = [held[i] for i in vqa_idx]
    api.media_distance = distance  # which pictures are photos, as at inference
    vqa_text, vqa_prob, read_off = answers(api, vqa_records)
    api.media_distance = None
    vqa_right = np.array(
        [is_right(r, p) for p, r in zip(vqa_text, vqa_records, strict=True)], float
    )

    cap_fit, vqa_fit = fit_h[cap_idx], fit_h[vqa_idx] & ~read_off  # the model's answers
    cap_kinds = [held_kinds[i] for i in cap_idx]
    vqa_kinds = [held_kinds[i] for i in vqa_idx]
    p_vqa = in_domain_prob(in_domain, d_held[vqa_idx], vqa_kinds, r_held[vqa_idx])
    # captions, joint: one curve over token scores, kind and distance, fitted on in-domain
    # captions (right or wrong) and out-of-domain ones (wrong) together; product: a curve on
    # in-domain captions alone, times the in-domain probability (as answers)
    cap_x = caption_features(cap_feat, d_held[cap_idx], cap_kinds, r_held[cap_idx])
    stress_x = caption_features(stress_feat, d_stress, stress_kinds, r_stress)
    joint = args.caption_curve == "joint"
    if joint:
        caption_curve = Logistic.fit(
            np.concatenate([cap_x[cap_fit], stress_x[fit_s]]),
            np.concatenate([cap_right[cap_fit], np.zeros(fit_s.sum())]),
        )
    else:
        p_cap = in_domain_prob(in_domain, d_held[cap_idx], cap_kinds, r_held[cap_idx])
        product_x = caption_features(
            cap_feat, d_held[cap_idx], cap_kinds, r_held[cap_idx], joint=False
        )
        caption_curve = Logistic.fit(product_x[cap_fit], cap_right[cap_fit], scale=p_cap[cap_fit])
    vqa_x = answer_features(vqa_prob, vqa_kinds, r_held[vqa_idx])
    answer_curve = Logistic.fit(vqa_x[vqa_fit], vqa_right[vqa_fit], scale=p_vqa[vqa_fit])
    calibration = Calibration(in_domain, caption_curve, answer_curve, 1.0, {}, joint_caption=joint)

    d_cap, d_vqa = d_held[cap_idx], d_held[vqa_idx]
    cap_conf = calibration.caption_confidence(cap_feat, d_cap, cap_kinds, r_held[cap_idx])
    vqa_conf = calibration.answer_confidence(vqa_prob, d_vqa, vqa_kinds, r_held[vqa_idx])
    vqa_conf = np.where(read_off, vqa_prob, vqa_conf)  # evidence: its own probability
    stress_conf = calibration.caption_confidence(stress_feat, d_stress, stress_kinds, r_stress)
    # the alt-text threshold: the lowest at which written captions are right often enough
    pool_conf = np.concatenate([cap_conf[cap_fit], stress_conf[fit_s]])
    pool_right = np.concatenate([cap_right[cap_fit], np.zeros(fit_s.sum())])
    threshold = 1.0
    for t in np.linspace(0.05, 0.99, 95):
        kept = pool_conf >= t
        if kept.sum() >= 20 and pool_right[kept].mean() >= ALT_TEXT_PRECISION:
            threshold = float(round(t, 2))
            break

    def domain(records):  # a synthetic category, "photo", or a stress kind
        names = [r.category or kind_of(r) for r in records]
        return np.array(["photo" if n.startswith("photo/") else n for n in names])

    cap_dom, vqa_dom = domain(cap_records), domain(vqa_records)
    test_v = ~fit_h[vqa_idx]
    curves, ece = {}, {}
    for name, conf, right, mask in (
        [
            (f"captions/{d}", cap_conf, cap_right, (cap_dom == d) & ~cap_fit)
            for d in sorted(set(cap_dom))
        ]
        + [
            (f"answers/{d}", vqa_conf, vqa_right, (vqa_dom == d) & ~fit_h[vqa_idx])
            for d in sorted(set(vqa_dom))
        ]
        + [("answers/photo, read off the recognizers", vqa_conf, vqa_right, read_off & test_v)]
        + [("captions/out-of-domain", stress_conf, np.zeros(len(stress)), test_s)]
    ):
        curves[name] = (conf[mask], right[mask])
        ece[name] = {
            "ece": expected_calibration_error(conf[mask], right[mask]),
            "n": int(mask.sum()),
            "accuracy": float(right[mask].mean()),
            "mean_confidence": float(conf[mask].mean()),
        }
    test_conf = np.concatenate([cap_conf[~cap_fit], stress_conf[test_s]])
    test_right = np.concatenate([cap_right[~cap_fit], np.zeros(test_s.sum())])
    kept = test_conf >= threshold
    hallucination = [
        hallucinated(p, r.target, r.category)
        for p, r in zip(cap_text, cap_records, strict=True)
        if not r.accept
    ]
    p_held = calibration.in_domain_prob(d_held, held_kinds, r_held)
    p_stress = calibration.in_domain_prob(d_stress, stress_kinds, r_stress)
    measured = {
        "ece": ece,
        "in_domain_auroc": auroc(p_held[test_h], p_stress[test_s]),
        "auroc_by_stress_kind": {
            kind: auroc(p_held[test_h], p_stress[test_s & (domain(stress) == kind)])
            for kind in sorted(set(domain(stress)))
        },
        "alt_text": {
            "threshold": threshold,
            "precision": float(test_right[kept].mean()) if kept.any() else None,
            "written_in_domain": float(kept[: (~cap_fit).sum()].mean()),
            "written_out_of_domain": float(kept[(~cap_fit).sum() :].mean()),
        },
        "stress_degenerate": {
            "count": sum(degenerate_reason(t) is not None for t in stress_text),
            "n": len(stress_text),
            "examples": [t for t in stress_text if degenerate_reason(t)][:10],
        },
        "hallucination": {"rate": float(np.mean(hallucination)), "n": len(hallucination)},
        "sizes": {"held_out": len(held), "stress": len(stress), "train_inputs": len(train)},
    }
    calibration = Calibration(
        in_domain, caption_curve, answer_curve, threshold, measured, joint_caption=joint
    )
    calibration.save(folder)
    distance.save(folder / STATS_FILE)
    (args.out / "report.json").write_text(json.dumps(measured, indent=1) + "\n")
    reliability_plot(curves, args.out / "reliability.png")
    print(json.dumps(measured, indent=1))


if __name__ == "__main__":
    main()
