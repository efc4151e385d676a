"""Training data for reading the recognizers: pictures with what they see, and teacher space.

Three kinds of records, all written as JSONL with each image's recognition rows stored
(``recognitions``), so training never waits for the recognizers:

- **clip art** (Tux Paint stamps, Debian openclipart PNGs): the recognizers run on the picture,
  and the caption and answers say what they found (``mmllm.data.recognition_text``);
- **teacher space**: recognition rows *sampled* over every ImageNet class and COCO object (a
  class distribution with siblings, objects with counts and boxes), worded by the same rules,
  shown with a random clip-art picture: every label is seen in training, not only those the
  clip art happens to trigger, so the decoder learns to put any recognized thing into words;
- **synthetic world**: a fixed pool of the built-in world's records with the recognizers' rows
  for its pictures, so the model keeps describing shapes from its cells where the recognizers
  see nothing they know.

``python -m mmllm.data.teacher_data --out DIR`` (progress bars; ~10 minutes on 2 cores) writes
``DIR/train.jsonl`` and the pictures. No picture is stored in this repository.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

import numpy as np
from tqdm import tqdm

from encoders.recognizers import COCO_OFFSET, N_CLASSES, Recognizer, to_rgb_array
from mmllm.data import recognition_text as words
from mmllm.data.label_words import coco_words, imagenet_words
from mmllm.data.synthetic import export_jsonl
from mmllm.errors import DataError
from mmllm.processing import load_image

STAMPS = Path("/usr/share/tuxpaint/stamps")
OPENCLIPART = Path("/usr/share/openclipart/png")


def clipart_files(limit: int, seed: int) -> list[Path]:
    """Up to ``limit`` clip-art PNGs (Tux Paint first, then a seeded sample of openclipart)."""
    files = (
        sorted(p for p in STAMPS.rglob("*.png") if "_" not in p.stem[-5:])
        if STAMPS.is_dir()
        else []
    )
    others = sorted(OPENCLIPART.rglob("*.png")) if OPENCLIPART.is_dir() else []
    random.Random(seed).shuffle(others)
    files = (files + others)[:limit]
    if not files:
        raise DataError(
            "no clip art found: apt-get install tuxpaint-stamps-default openclipart-png"
        )
    return files


def sample_rows(rng: np.random.Generator) -> np.ndarray:
    """Recognition rows ``(K, 6)`` drawn in teacher space: a top class and four runners-up (half
    of them its siblings under the same everyday noun), and 0-5 objects with boxes."""
    names, coco = imagenet_words(), coco_words()
    by_basic: dict[str, list[int]] = {}
    for label, word in enumerate(names):
        by_basic.setdefault(word.basic, []).append(label)
    top = int(rng.integers(N_CLASSES))
    p = float(rng.choice([rng.uniform(0.05, 0.3), rng.uniform(0.3, 1.0)], p=[0.3, 0.7]))
    labels, probs, rest = [top], [p], 1.0 - p
    siblings = [c for c in by_basic[names[top].basic] if c != top]
    for _ in range(4):
        pool = siblings if siblings and rng.random() < 0.5 else range(N_CLASSES)
        label = int(rng.choice(list(pool)))
        if label in labels:
            continue
        share = float(rng.uniform(0.0, min(rest, probs[-1])))
        labels.append(label)
        probs.append(share)
        rest -= share
    rows = [
        [c, q, 0.0, 0.0, 1.0, 1.0]
        for c, q in zip(labels, probs, strict=True)
        if q >= 0.02 or c == top
    ]
    ids = sorted(coco)
    n_kinds = int(rng.choice([0, 1, 1, 2, 2, 3]))
    for cid in rng.choice(ids, size=n_kinds, replace=False):
        for _ in range(int(rng.choice([1, 1, 1, 2, 3, 4]))):
            x1, y1 = rng.uniform(0, 0.7, size=2)
            w, h = rng.uniform(0.1, 1 - x1), rng.uniform(0.1, 1 - y1)
            rows.append(
                [COCO_OFFSET + int(cid), float(rng.uniform(0.3, 1.0)), x1, y1, x1 + w, y1 + h]
            )
    head, objects = rows[: len(labels)], sorted(rows[len(labels) :], key=lambda r: -r[1])[:10]
    return np.asarray(head + objects, dtype=np.float32)


def records_for(
    image: str, rows: np.ndarray, rng: np.random.Generator, category: str
) -> list[dict]:
    """A caption and a few questions worded from ``rows`` for picture ``image``."""
    reading = words.read_rows(rows)
    stored = [[round(float(v), 4) for v in row] for row in rows]
    base = {"image": image, "recognitions": [stored], "category": category}
    out = [{**base, "task": "caption", "caption": words.caption(reading)}]
    for question, answer, qtype in words.questions(reading, rng):
        out.append({**base, "task": "vqa", "question": question, "answer": answer, "qtype": qtype})
    return out


def export_teacher_data(
    out: Path, clipart: int = 3000, sampled: int = 12000, synthetic: int = 4000, seed: int = 0
) -> Path:
    """Write ``out/train.jsonl`` (see the module docstring); returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "clipart").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    recognizer = Recognizer()
    records: list[dict] = []
    carriers = []
    for i, path in enumerate(tqdm(clipart_files(clipart, seed), desc="clip art", unit="img")):
        try:
            image = load_image(path)
        except ValueError:
            continue
        if image.width > 512 or image.height > 512:
            image.thumbnail((512, 512))
        name = f"clipart/{i:05d}.jpg"
        image.save(out / name, quality=92)
        rows = recognizer(to_rgb_array(image))
        carriers.append(name)
        records += records_for(name, rows, rng, "teacher_clipart")
    for _ in tqdm(range(sampled), desc="teacher space", unit="set"):
        name = carriers[int(rng.integers(len(carriers)))]
        picked = records_for(name, sample_rows(rng), rng, "teacher_sampled")
        records += [picked[0], picked[1 + int(rng.integers(len(picked) - 1))]]
    if synthetic:
        pool = export_jsonl(out / "synthetic", synthetic, seed=seed + 31, split="train")
        for line in tqdm(pool.read_text().splitlines(), desc="synthetic", unit="rec"):
            record = json.loads(line)
            images = record.get("image")
            if images:
                paths = images if isinstance(images, list) else [images]
                rows = [recognizer(to_rgb_array(load_image(pool.parent / p))) for p in paths]
                record["recognitions"] = [
                    [[round(float(v), 4) for v in r] for r in rows_] for rows_ in rows
                ]
                record["image"] = [f"synthetic/{p}" for p in paths]
            if record.get("audio"):
                clips = record["audio"] if isinstance(record["audio"], list) else [record["audio"]]
                record["audio"] = [f"synthetic/{p}" for p in clips]
            records.append(record)
    random.Random(seed).shuffle(records)
    target = out / "train.jsonl"
    tmp = target.with_suffix(".tmp")
    with tmp.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    os.replace(tmp, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clipart", type=int, default=3000)
    parser.add_argument("--sampled", type=int, default=12000)
    parser.add_argument("--synthetic", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = export_teacher_data(args.out, args.clipart, args.sampled, args.synthetic, args.seed)
    print(f"wrote {path} ({sum(1 for _ in path.open())} records)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
