"""One side of a benchmark, in its own process: load a workload, then time what is asked.

Commands arrive as JSON lines on stdin and results leave as JSON lines on stdout, so the
orchestrator can alternate rounds between two live processes and read each one's peak memory.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import resource
import sys
import time
from pathlib import Path

import torch

from mmllm.bench.peers import build, weights_read_per_token
from mmllm.model.decoder import Decoder


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) from /proc, in MB; nan if absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def reset_peak() -> None:
    """Restart the peak-RSS count (Linux: writing 5 to clear_refs resets VmHWM), after handing
    freed memory back to the system (glibc keeps freed heap pages resident until trimmed)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", required=True)
    parser.add_argument("--size", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quantize", default=None)
    parser.add_argument("--compile", action="store_true", help="ours: compiled decoding")
    args = parser.parse_args()
    if args.compile and args.side != "ours":
        parser.error("--compile compiles our decoding; the peers run as transformers ships them")
    torch.set_num_threads(args.threads)
    import transformers  # noqa: F401  (imported before the baseline, like the peers need)

    device = torch.device(args.device)
    reset_peak()  # torch and transformers imported, no model yet: count from here
    baseline_mb = status_mb("VmRSS")
    workload = build(args.side, args.size, args.quantize, args.compile)  # compiles in warm-up
    if device.type == "cuda":
        workload.model.to(device=device, dtype=torch.bfloat16)
    size = workload.image_size
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    info = {"parameters": workload.parameters, "name": workload.name, "compiled": args.compile}
    decoder = getattr(workload.model, "decoder", None)
    if isinstance(decoder, Decoder):
        info["decode_bytes"] = weights_read_per_token(decoder)
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        g = torch.Generator().manual_seed(cmd.get("seed", 0))
        pixels = torch.randn(cmd.get("batch", 1), 3, size, size, generator=g)
        pixels = pixels.to(device=device, dtype=dtype)
        if cmd["op"] == "caption":
            _sync(device)
            start = time.perf_counter()
            out = workload.run(pixels, cmd["new_tokens"])
            _sync(device)
            seconds = time.perf_counter() - start
            assert out.shape == (pixels.shape[0], cmd["new_tokens"]), out.shape
            result = {"seconds": seconds}
        elif cmd["op"] == "ttft":
            _sync(device)
            start = time.perf_counter()
            workload.prefill(pixels).argmax(-1)
            _sync(device)
            result = {"seconds": time.perf_counter() - start}
        elif cmd["op"] == "tokens":  # the greedy ids themselves, to compare two runtimes
            result = {"ids": workload.run(pixels, cmd["new_tokens"]).tolist()}
        elif cmd["op"] == "reset_peak":  # count the peak of what runs from here on
            reset_peak()
            result = {"rss_mb": status_mb("VmRSS") - baseline_mb}
        elif cmd["op"] == "rss":
            result = {"peak_rss_mb": _rss_mb(), "model_rss_mb": status_mb("VmHWM") - baseline_mb}
            if device.type == "cuda":
                result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        else:
            result = {"error": f"unknown op {cmd['op']}"}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
