"""Build the stress set: inputs a model was not trained on, to count degenerate outputs.

    python scripts/stress_set.py --out stress --photos photos/data.jsonl
    mmllm eval --data stress/stress.jsonl --n 100000 --checkpoint mmllm-tiny

Writes ``stress.jsonl``: one caption record per input, category ``stress/<kind>``, and the
placeholder caption "-" (there is no right caption; ``mmllm eval`` reports the ``degenerate``
share, ``mmllm.eval.degenerate``). Kinds: real photos (the real-photo set's, with
``--photos``; scikit-image's otherwise), clip art (Debian's ``openclipart-png``), noise,
blank, gradient, checkerboard, tiny, huge and extreme-aspect images; silence, noise, tone and
espeak-ng speech clips. Seeded: the same files every time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

CLIPART = Path("/usr/share/openclipart/png")
RATE = 16000
SENTENCES = (
    "please pass me the red cup",
    "the weather is nice today",
    "turn left at the next corner",
    "how many birds are on the wire",
    "my phone number is five five five",
    "the meeting starts at nine",
)


def images(rng: np.random.Generator) -> dict[str, list[Image.Image]]:
    """Synthetic hard images by kind."""
    out: dict[str, list[Image.Image]] = {}
    out["noise"] = [
        Image.fromarray(rng.integers(0, 256, (s, s, 3), dtype=np.uint8))
        for s in rng.integers(32, 512, 40)
    ] + [
        Image.fromarray(np.clip(rng.normal(128, 60, (224, 224, 3)), 0, 255).astype(np.uint8))
        for _ in range(20)
    ]
    out["blank"] = [
        Image.new("RGB", (int(w), int(w)), tuple(int(c) for c in rng.integers(0, 256, 3)))
        for w in rng.integers(16, 600, 40)
    ] + [Image.new("RGB", (224, 224), c) for c in ("black", "white", "grey")]
    ramps = []
    for _ in range(40):
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = np.linspace(0, 1, 256)[:, None, None]
        ramp = (a * (1 - t) + b * t).astype(np.uint8).repeat(256, 1)
        ramps.append(Image.fromarray(ramp if rng.random() < 0.5 else ramp.transpose(1, 0, 2)))
    out["gradient"] = ramps
    out["checkerboard"] = [
        Image.fromarray(
            (((np.indices((240, 240)) // int(s)).sum(0) % 2) * 255).astype(np.uint8)
        ).convert("RGB")
        for s in rng.integers(2, 60, 20)
    ]
    out["tiny"] = [
        Image.fromarray(rng.integers(0, 256, (int(s), int(s), 3), dtype=np.uint8))
        for s in rng.integers(1, 9, 30)
    ]
    out["huge"] = [
        Image.fromarray(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8)).resize((4000, 3000))
        for _ in range(4)
    ] + [Image.new("RGB", (5000, 4000), "navy") for _ in range(2)]
    out["extreme_aspect"] = [
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        for shape in [(1, 800, 3), (800, 1, 3), (4, 1200, 3), (1200, 4, 3)] * 5
    ]
    return out


def photo_paths(photos: Path | None, n: int, rng: np.random.Generator) -> list[Path]:
    if photos is not None:
        rows = [json.loads(line) for line in photos.read_text().splitlines() if line.strip()]
        paths = sorted({photos.parent / r["image"] for r in rows if "image" in r})
    else:
        from skimage import data as sk

        paths = []
        tmp = Path(tempfile.mkdtemp())
        for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "cat"):
            path = tmp / f"{name}.png"
            Image.fromarray(getattr(sk, name)()).save(path)
            paths.append(path)
    return [paths[i] for i in sorted(rng.permutation(len(paths))[:n])]


def clips(rng: np.random.Generator, speech_dir: Path) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    out["silence"] = [np.zeros(int(RATE * d), np.float32) for d in rng.uniform(0.2, 8, 30)]
    out["audio_noise"] = [
        (rng.normal(0, a, int(RATE * d))).astype(np.float32)
        for a, d in zip(rng.uniform(0.01, 0.5, 30), rng.uniform(0.5, 6, 30), strict=True)
    ]
    t = np.arange(RATE * 2) / RATE
    out["tone"] = [(0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (50, 9000)]
    speech = []
    if shutil.which("espeak-ng"):
        voices = ("en", "en-us", "en-gb-scotland", "en+f3", "en+m7")
        for i, text in enumerate(SENTENCES * 5):
            wav = speech_dir / f"speech{i}.wav"
            args = ["espeak-ng", "-v", voices[i % len(voices)], "-s", str(120 + 10 * (i % 7))]
            subprocess.run([*args, "-w", str(wav), text], check=True)
            data, rate = soundfile.read(wav, dtype="float32")
            speech.append(
                data
                if rate == RATE
                else np.interp(
                    np.arange(0, len(data), rate / RATE), np.arange(len(data)), data
                ).astype(np.float32)
            )
    out["speech"] = speech
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--photos", type=Path, default=None, help="the real-photo set's JSONL")
    parser.add_argument("--n-photos", type=int, default=150)
    parser.add_argument("--n-clipart", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    media = args.out / "media"
    media.mkdir(parents=True, exist_ok=True)
    records = []

    def add(kind: str, path: Path, medium: str) -> None:
        records.append(
            {
                medium: str(path.relative_to(args.out)),
                "task": "caption",
                "caption": "-",
                "category": f"stress/{kind}",
            }
        )

    for i, path in enumerate(photo_paths(args.photos, args.n_photos, rng)):
        target = media / f"photo{i}{path.suffix}"
        shutil.copyfile(path, target)
        add("photo", target, "image")
    if CLIPART.is_dir():
        files = sorted(CLIPART.rglob("*.png"))
        for i in sorted(rng.permutation(len(files))[: args.n_clipart]):
            target = media / f"clipart{i}.png"
            shutil.copyfile(files[i], target)
            add("clipart", target, "image")
    for kind, pictures in images(rng).items():
        for i, picture in enumerate(pictures):
            target = media / f"{kind}{i}.png"
            picture.save(target)
            add(kind, target, "image")
    for kind, waves in clips(rng, media).items():
        for i, wave in enumerate(waves):
            target = media / f"{kind}{i}.wav"
            soundfile.write(target, wave, RATE)
            add(kind, target, "audio")
    (args.out / "stress.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    kinds = sorted({r["category"] for r in records})
    print(f"wrote {len(records)} inputs to {args.out / 'stress.jsonl'}: {', '.join(kinds)}")


if __name__ == "__main__":
    main()
