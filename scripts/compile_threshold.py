"""How many inputs a job needs before compiled decoding pays for its compile: the measurement
behind ``mmllm.compiled.AUTO_COMPILE_MIN_ITEMS``.

Captions the same photos eagerly and compiled (best of two passes each, after a warm-up), and
times the first compiled batch, which compiles (from inductor's cache if an earlier run filled
it: run twice for the warm figure). Break-even = compile time / time saved per photo.

    python scripts/compile_threshold.py --photos data/photos/images --n 64
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import mmllm
from mmllm.compiled import CompiledModel
from mmllm.processing import load_image

SUFFIXES = {".jpg", ".jpeg", ".png"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", required=True, help="a folder of photos (searched deeply)")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args()
    paths = sorted(p for p in Path(args.photos).rglob("*") if p.suffix.lower() in SUFFIXES)
    images = [load_image(p) for p in paths[: args.n]]
    api = mmllm.load(args.checkpoint, device="cpu", compile=False)
    api.caption(images[: args.batch_size], batch_size=args.batch_size)  # warm the recognizers

    def best_of_two() -> tuple[float, list[str]]:
        times, out = [], []
        for _ in range(2):
            start = time.perf_counter()
            out = [str(t) for t in api.caption(images, batch_size=args.batch_size)]
            times.append(time.perf_counter() - start)
        return min(times), out

    eager, want = best_of_two()
    api.compiled = CompiledModel(api.model)
    start = time.perf_counter()
    api.caption(images[: args.batch_size], batch_size=args.batch_size)
    first = time.perf_counter() - start
    compiled, got = best_of_two()
    per_eager, per_compiled = eager / len(images), compiled / len(images)
    compile_s = first - per_compiled * args.batch_size
    print(
        f"{len(images)} photos at batch {args.batch_size}: eager {1000 * per_eager:.1f} ms a "
        f"photo, compiled {1000 * per_compiled:.1f} ms; compiling took {compile_s:.1f} s; "
        f"captions identical: {got == want}"
    )
    saved = per_eager - per_compiled
    print(f"break-even: {compile_s / saved:.0f} photos" if saved > 0 else "compiling saves nothing")


if __name__ == "__main__":
    main()
