"""How fast a new process captions one photo, and how much memory it takes: the cold-start
figures of ``docs/performance.md``.

Each timing is a new ``mmllm caption`` process (wall time, as a user waits for it): first with
an empty cache (``MMLLM_CACHE`` pointed at a new folder: every conversion runs), then warm.
Memory is measured in one process: resident memory after the imports, then the peak while the
default model loads and captions (Linux ``/proc``: the peak is reset after the imports), set
against the fp32 size of every weight the caption reads (the model's own and its recognizers').

    python scripts/startup_report.py --photo demos/examples/cat.jpg --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from encoders.recognizers import model_dir

MEASURE_MEMORY = r"""
import json, sys
import mmllm
from encoders import recognizers
from mmllm.bench.worker import reset_peak, status_mb
after_imports = status_mb("VmRSS")
reset_peak()
api = mmllm.load(device="cpu")
text = api.caption(sys.argv[1])
model_mb = 4 * sum(p.numel() for p in api.model.parameters()) / 2**20
print(json.dumps({"text": str(text), "after_imports_mb": after_imports,
                  "peak_mb": status_mb("VmHWM"), "model_fp32_mb": model_mb}))
"""


def recognizer_fp32_mb() -> float:
    """fp32 size of the recognizers' weights: the detector's graph is fp32 already; the int8
    classifier's parameters count 4 bytes each."""

    folder = model_dir()
    detector = (folder / "frozen_inference_graph.pb").stat().st_size
    classifier = 4 * (folder / "efficientnet_lite3.tflite").stat().st_size  # ~1 byte a weight
    return (detector + classifier) / 2**20


def caption_seconds(photo: str, cache: str) -> float:
    env = {**os.environ, "MMLLM_CACHE": cache}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mmllm.cli", "caption", photo],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", default="demos/examples/cat.jpg")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    cold, warm = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as cache:
            cold.append(caption_seconds(args.photo, cache))
            warm.append(caption_seconds(args.photo, cache))
    out = subprocess.run(
        [sys.executable, "-c", MEASURE_MEMORY, args.photo],
        check=True,
        capture_output=True,
        text=True,
    )
    memory = json.loads(out.stdout.strip().splitlines()[-1])
    weights = memory["model_fp32_mb"] + recognizer_fp32_mb()
    report = {
        "photo": Path(args.photo).name,
        "cold_cache_s": statistics.median(cold),
        "warm_cache_s": statistics.median(warm),
        "runs": args.runs,
        **memory,
        "caption_mb": memory["peak_mb"] - memory["after_imports_mb"],
        "weights_fp32_mb": weights,
    }
    print(
        f"`mmllm caption {report['photo']}` in a new process, median of {args.runs}: "
        f"{report['cold_cache_s']:.2f} s with an empty cache, {report['warm_cache_s']:.2f} s "
        f"warm.\nMemory: {report['after_imports_mb']:.0f} MB after the imports; the load and "
        f"the caption peak {report['caption_mb']:.0f} MB above that, against "
        f"{weights:.0f} MB of fp32 weights ({report['caption_mb'] / weights:.2f}x)."
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
