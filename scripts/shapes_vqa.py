"""A user-style VQA dataset, for trying fine-tuning: small shape pictures with questions.

It stands in for a dataset a user brings (Sort-of-CLEVR-like: 64x64 pictures, one answer word),
and it is not the synthetic world: other colours, other drawing, other question wording. Each
picture holds five objects of distinct colours (of eight), each a square or a circle, and is
asked ten questions from five families:

- "what shape is the red object?" (square, circle)
- "is the red object on the left or on the right?" (left, right)
- "is the red object at the top or at the bottom?" (top, bottom)
- "how many objects have the same shape as the red object?" (1-5)
- "is there a purple object?" (yes, no)

No object sits within 4 pixels of the middle lines, so left/right and top/bottom are never
ambiguous. Output: ``OUT/images/*.png`` and ``OUT/train.jsonl`` / ``OUT/test.jsonl`` (pictures
split, never shared), in mmllm's JSONL format.

    python scripts/shapes_vqa.py --out data/shapes-vqa --train 4000 --test 1000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 60, 220),
    "orange": (250, 140, 0),
    "gray": (128, 128, 128),
    "yellow": (240, 220, 20),
    "purple": (140, 40, 170),
    "cyan": (0, 200, 210),
}
SIZE, RADIUS, OBJECTS, MARGIN = 64, 5, 5, 4


def draw_scene(rng: np.random.Generator) -> tuple[Image.Image, list[dict]]:
    """A 64x64 picture and its objects ``{"colour", "shape", "x", "y"}`` (centres, pixels)."""
    names = rng.choice(list(COLOURS), size=OBJECTS, replace=False)
    objects: list[dict] = []
    while len(objects) < OBJECTS:
        x, y = (int(v) for v in rng.integers(RADIUS + 1, SIZE - RADIUS - 1, size=2))
        if min(abs(x - SIZE / 2), abs(y - SIZE / 2)) < MARGIN:
            continue
        if any((x - o["x"]) ** 2 + (y - o["y"]) ** 2 < (2 * RADIUS + 3) ** 2 for o in objects):
            continue
        shape = "square" if rng.random() < 0.5 else "circle"
        objects.append({"colour": str(names[len(objects)]), "shape": shape, "x": x, "y": y})
    image = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    pen = ImageDraw.Draw(image)
    for o in objects:
        box = (o["x"] - RADIUS, o["y"] - RADIUS, o["x"] + RADIUS, o["y"] + RADIUS)
        fill = COLOURS[o["colour"]]
        (pen.rectangle if o["shape"] == "square" else pen.ellipse)(box, fill=fill)
    return image, objects


def questions(objects: list[dict], rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    """``n`` (question, answer) pairs about one picture, the five families in turn."""
    out = []
    for i in range(n):
        o = objects[int(rng.integers(len(objects)))]
        c, family = o["colour"], i % 5
        if family == 0:
            out.append((f"what shape is the {c} object?", o["shape"]))
        elif family == 1:
            side = "left" if o["x"] < SIZE / 2 else "right"
            out.append((f"is the {c} object on the left or on the right?", side))
        elif family == 2:
            side = "top" if o["y"] < SIZE / 2 else "bottom"
            out.append((f"is the {c} object at the top or at the bottom?", side))
        elif family == 3:
            same = sum(p["shape"] == o["shape"] for p in objects)
            out.append((f"how many objects have the same shape as the {c} object?", str(same)))
        else:
            asked = str(rng.choice(list(COLOURS)))
            there = any(p["colour"] == asked for p in objects)
            out.append((f"is there a {asked} object?", "yes" if there else "no"))
    return out


def export(out: Path, n_train: int, n_test: int, per_image: int = 10, seed: int = 0) -> dict:
    """Write the pictures and both splits; returns the record count of each split."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    counts = {}
    index = 0
    for split, n_images in (("train", n_train), ("test", n_test)):
        with (out / f"{split}.jsonl").open("w") as handle:
            for _ in tqdm(range(n_images), desc=split):
                image, objects = draw_scene(rng)
                name = f"images/{index:06d}.png"
                image.save(out / name)
                for q, a in questions(objects, rng, per_image):
                    record = {"image": name, "task": "vqa", "question": q, "answer": a}
                    handle.write(json.dumps(record) + "\n")
                index += 1
        counts[split] = n_images * per_image
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--train", type=int, default=4000, help="training pictures")
    parser.add_argument("--test", type=int, default=1000, help="test pictures")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(export(Path(args.out), args.train, args.test, seed=args.seed)))


if __name__ == "__main__":
    main()
