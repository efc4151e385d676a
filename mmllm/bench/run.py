"""Run ``mmllm bench``: alternate rounds between our model and each peer, report ratios.

Each side lives in its own worker process (so its peak memory is its own), with the same
thread count, inputs and greedy decoding of exactly N new tokens. After a warm-up, rounds
alternate ours/theirs, each timed command after a short quiet pause (:data:`QUIET_S`); each
round gives one ratio (their time / ours), and the report gives the median ratio with its
spread (min-max). The machine's own matmul FLOP/s and memory bandwidth are measured in the
same run; the bandwidth again beside each round of the larger model's batch-1 decode, whose
share of it (the physical-limit ratio) is the median over rounds.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from mmllm.bench.peers import SIZES, build_ours
from mmllm.model.multimodal import MultimodalLM
from mmllm.packed import disabled

PEERS = {"ved": "VisionEncoderDecoderModel", "llava": "LlavaForConditionalGeneration"}
# seconds of quiet before each timed command: a process that has just finished leaves its
# OpenMP threads spin-waiting for a few milliseconds, on the cores the next process needs
# (without it both sides read ~30% slow; docs/lab/2026-12-training-notes.md has the figures).
QUIET_S = 0.05
TIMED_OPS = ("caption", "ttft")


class Worker:
    """A live worker process for one side."""

    def __init__(
        self,
        side: str,
        size: str,
        threads: int,
        device: str,
        quantize: str | None,
        compile: bool = False,
    ):
        cmd = [
            sys.executable,
            "-m",
            "mmllm.bench.worker",
            "--side",
            side,
            "--size",
            size,
            "--threads",
            str(threads),
            "--device",
            device,
        ]
        if quantize:
            cmd += ["--quantize", quantize]
        if compile:
            cmd += ["--compile"]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("benchmark worker exited early")
        return json.loads(line)

    def ask(self, **cmd) -> dict:
        """Send one command and return its result; a timed one after :data:`QUIET_S` of quiet."""
        if cmd.get("op") in TIMED_OPS:
            time.sleep(QUIET_S)
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@dataclass
class Comparison:
    """Per-round seconds for ours and one peer on one measurement."""

    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [t / o for o, t in zip(self.ours, self.theirs, strict=True)]

    def summary(self) -> dict:
        r = self.ratios
        return {
            "ours_s": statistics.median(self.ours),
            "theirs_s": statistics.median(self.theirs),
            "ratio_median": statistics.median(r),
            "ratio_min": min(r),
            "ratio_max": max(r),
            "rounds": len(r),
        }


def processor_name(device: str) -> str:
    """The chip a report was measured on: the GPU's name on CUDA, else the CPU's model name from
    ``/proc/cpuinfo`` (Linux), else whatever ``platform.processor()`` says (may be empty)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine_limits(threads: int, device: str) -> dict:
    """Measured fp32 matmul FLOP/s and memory bandwidth (large tensor sum), best of 5."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    n = 1024
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    flops = 0.0
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        if dev.type == "cuda":
            torch.cuda.synchronize()
        flops = max(flops, 2 * n**3 / (time.perf_counter() - start))
    return {"matmul_gflops": flops / 1e9, "bandwidth_gbs": memory_bandwidth(big_tensor(dev))}


def big_tensor(device: torch.device) -> torch.Tensor:
    """256 MB of fp32, far more than any CPU cache: what :func:`memory_bandwidth` reads."""
    return torch.randn(64 * 2**20, device=device)


def memory_bandwidth(big: torch.Tensor, repeats: int = 5) -> float:
    """GB/s reading ``big`` (its sum), best of ``repeats``."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        big.sum()
        if big.device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, big.numel() * big.element_size() / (time.perf_counter() - start))
    return best / 1e9


def compare(
    size: str,
    peers: list[str],
    rounds: int,
    new_tokens: int,
    threads: int,
    device: str,
    *,
    batches: tuple[int, ...],
    compile: bool = False,
) -> dict:
    """Alternate rounds between ours (``compile``: with compiled decoding) and each peer;
    return per-measurement summaries."""
    ours = Worker("ours", size, threads, device, None, compile)
    results: dict = {"parameters": {"mmllm": ours.info["parameters"]}, "measurements": {}}
    try:
        for peer in peers:
            theirs = Worker(peer, size, threads, device, None)
            results["parameters"][PEERS[peer]] = theirs.info["parameters"]
            table = alternate(ours, theirs, timing_plan(batches, new_tokens), rounds)
            results["measurements"][peer] = {k: v.summary() for k, v in table.items()}
            results["measurements"][peer]["_raw"] = {
                k: [v.ours, v.theirs] for k, v in table.items()
            }
            results.setdefault("peak_rss_mb", {})[PEERS[peer]] = theirs.ask(op="rss")
            theirs.close()
        results.setdefault("peak_rss_mb", {})["mmllm"] = ours.ask(op="rss")
    finally:
        ours.close()
    return results


def timing_plan(batches: tuple[int, ...], new_tokens: int) -> dict[str, dict]:
    """What a comparison times, by name: captioning of exactly ``new_tokens`` tokens at each
    batch size, the first token at batch 1, and a one-token caption (for decode rates)."""
    plan = {
        f"caption_b{b}": {"op": "caption", "batch": b, "new_tokens": new_tokens} for b in batches
    }
    plan["ttft_b1"] = {"op": "ttft", "batch": 1}
    plan["caption_b1_1tok"] = {"op": "caption", "batch": 1, "new_tokens": 1}
    return plan


def alternate(
    ours: Worker, theirs: Worker, plan: dict[str, dict], rounds: int, each_round=None
) -> dict[str, Comparison]:
    """After a warm-up of every command, ``rounds`` rounds in which both workers run ``plan``
    in turn; ``each_round()`` (if given) runs after each. Per-command seconds of both sides."""
    for cmd in plan.values():  # warm-up
        ours.ask(**cmd)
        theirs.ask(**cmd)
    table = {name: Comparison() for name in plan}
    for _ in range(rounds):
        for name, cmd in plan.items():
            table[name].ours.append(ours.ask(**cmd)["seconds"])
            table[name].theirs.append(theirs.ask(**cmd)["seconds"])
        if each_round is not None:
            each_round()
    return table


def decode_rate(summary: dict, new_tokens: int, side: str) -> float:
    """Tokens/s after the first: (N - 1) new tokens over (time for N - time for 1), batch 1."""
    total = summary["caption_b1"][f"{side}_s"]
    first = summary["caption_b1_1tok"][f"{side}_s"]
    return (new_tokens - 1) / max(total - first, 1e-9)


def caption_flops(size: str, batch: int, new_tokens: int) -> float:
    """Floating-point operations of one ``batch``-image caption of exactly ``new_tokens`` tokens
    by our model (PyTorch's counter, on the modules' own ops: products, attention, convolution)."""
    workload = build_ours(SIZES[size])
    size_px = workload.image_size
    pixels = torch.randn(batch, 3, size_px, size_px, generator=torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False)
    with disabled(), counter:
        workload.run(pixels, new_tokens)
    return float(counter.get_total_flops())


def int8_decode(size: str, new_tokens: int, threads: int, rounds: int) -> dict:
    """Batch-1 decode tokens/s of our model in fp32 and int8, alternating rounds."""
    fp32 = Worker("ours", size, threads, "cpu", None)
    int8 = Worker("ours", size, threads, "cpu", "int8")
    try:
        return int8_against_fp32(fp32, int8, new_tokens, rounds)
    finally:
        fp32.close()
        int8.close()


def int8_against_fp32(fp32: Worker, int8: Worker, new_tokens: int, rounds: int) -> dict:
    """Batch-1 decode tokens/s of two live workers (fp32 and int8), alternating rounds after a
    warm-up, and the speed-up's median and spread."""
    rates: dict[str, list[float]] = {"fp32": [], "int8": []}
    cmds = [{"op": "caption", "batch": 1, "new_tokens": n} for n in (new_tokens, 1)]
    for w in (fp32, int8):
        for cmd in cmds:
            w.ask(**cmd)
    for _ in range(rounds):
        for name, w in (("fp32", fp32), ("int8", int8)):
            full, first = (w.ask(**c)["seconds"] for c in cmds)
            rates[name].append((new_tokens - 1) / max(full - first, 1e-9))
    ratios = [i / f for f, i in zip(rates["fp32"], rates["int8"], strict=True)]
    return {
        "fp32_tok_s": statistics.median(rates["fp32"]),
        "int8_tok_s": statistics.median(rates["int8"]),
        "speedup_median": statistics.median(ratios),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
    }


def bandwidth_check(
    size: str, new_tokens: int, threads: int, rounds: int, compile: bool = False
) -> dict:
    """Our batch-1 decode against the memory-bandwidth limit: every token reads all decoder
    weights (fp32) once, so achieved bandwidth = decoder bytes x tokens/s. The bandwidth is read
    again beside each round and each round's decode is set against its own reading (the median
    share is reported): on a shared machine the same reading moved from 67 to 39 GB/s within a
    minute, and one reading at the start once put a decode at 138% of it."""
    model = MultimodalLM(SIZES[size])
    decoder_bytes = 4 * sum(p.numel() for p in model.decoder.parameters())
    params = sum(p.numel() for p in model.parameters())
    del model
    w = Worker("ours", size, threads, "cpu", None, compile)
    try:
        cmds = [{"op": "caption", "batch": 1, "new_tokens": n} for n in (new_tokens, 1)]
        for cmd in cmds:
            w.ask(**cmd)
        rates, readings, big = [], [], big_tensor(torch.device("cpu"))
        for _ in range(rounds):
            full, first = (w.ask(**c)["seconds"] for c in cmds)
            rates.append((new_tokens - 1) / max(full - first, 1e-9))
            readings.append(memory_bandwidth(big, repeats=3))
    finally:
        w.close()
    shares = [decoder_bytes * r / 1e9 / gbs for r, gbs in zip(rates, readings, strict=True)]
    rate = statistics.median(rates)
    return {
        "size": size,
        "parameters": params,
        "decoder_mb": decoder_bytes / 1e6,
        "decode_tok_s": rate,
        "decode_tok_s_rounds": rates,
        "achieved_gbs": decoder_bytes * rate / 1e9,
        "bandwidth_gbs_rounds": readings,
        "fraction_of_bandwidth": statistics.median(shares),
        "fraction_min": min(shares),
        "fraction_max": max(shares),
    }


def run_bench(
    size: str = "small",
    rounds: int = 5,
    new_tokens: int = 32,
    threads: int | None = None,
    device: str = "cpu",
    quick: bool = False,
    big_size: str | None = "base",
    compile: bool = False,
) -> dict:
    """Every measurement of ``mmllm bench`` (see the module docstring); ``compile``: our side
    generates through compiled decoding (``mmllm.compiled.CompiledModel``), compiled during
    warm-up. The int8 comparison stays eager on both sides."""
    threads = threads or torch.get_num_threads()
    if quick:
        rounds, new_tokens, big_size = 1, 4, None
    limits = machine_limits(threads, device)
    report = {
        "machine": {
            "platform": f"{platform.machine()} {platform.system()}",
            "processor": processor_name(device),
            "threads": threads,
            "device": device,
            "torch": torch.__version__,
            **limits,
        },
        "settings": {
            "size": size,
            "rounds": rounds,
            "new_tokens": new_tokens,
            "compiled": compile,
            "quiet_s": QUIET_S,
        },
        "comparison": compare(
            size,
            ["ved", "llava"],
            rounds,
            new_tokens,
            threads,
            device,
            batches=(1, 8),
            compile=compile,
        ),
    }
    peer_rates = {}
    for peer, summary in report["comparison"]["measurements"].items():
        peer_rates[peer] = {
            "ours": decode_rate(summary, new_tokens, "ours"),
            "theirs": decode_rate(summary, new_tokens, "theirs"),
        }
    report["decode_tok_s_b1"] = peer_rates
    flops = caption_flops(size, 8, new_tokens)
    seconds = report["comparison"]["measurements"]["ved"]["caption_b8"]["ours_s"]
    report["caption_b8_flops"] = {
        "gflop": flops / 1e9,
        "gflops": flops / seconds / 1e9,
        "share_of_matmul_peak": flops / seconds / 1e9 / limits["matmul_gflops"],
    }
    if device == "cpu" and big_size:
        report["bandwidth"] = bandwidth_check(big_size, new_tokens, threads, rounds, compile)
        report["int8"] = int8_decode(big_size, new_tokens, threads, rounds)
    return report


def markdown(report: dict) -> str:
    """The report as Markdown tables."""
    m, s = report["machine"], report["settings"]
    comp = report["comparison"]
    lines = [
        f"Machine: {m['processor'] or 'unnamed processor'} ({m['platform']}), "
        f"{m['threads']} thread(s), {m['device']}, torch {m['torch']}; "
        f"measured {m['matmul_gflops']:.0f} GFLOP/s fp32 matmul, {m['bandwidth_gbs']:.1f} GB/s.",
        f"Size `{s['size']}`, greedy, exactly {s['new_tokens']} new tokens, {s['rounds']} "
        "alternating rounds after warm-up, each timed call after "
        f"{s['quiet_s'] * 1e3:.0f} ms of quiet. Ratio = their time / our time (higher is "
        "better for mmllm), median [min-max] over rounds. mmllm "
        + (
            "with compiled decoding (`--compile`; compiled in the warm-up)."
            if s.get("compiled")
            else "eager (no `--compile`)."
        ),
        "",
        "| model | parameters | peak RSS (MB) | of which the model and its run (MB) |",
        "|---|---|---|---|",
    ]
    for name, n in comp["parameters"].items():
        rss = comp.get("peak_rss_mb", {}).get(name, {})
        lines.append(
            f"| {name} | {n / 1e6:.2f}M | {rss.get('peak_rss_mb', float('nan')):.0f} | "
            f"{rss.get('model_rss_mb', float('nan')):.0f} |"
        )
    lines += ["", "| measurement | mmllm | peer | peer value | ratio |", "|---|---|---|---|---|"]
    for peer, table in comp["measurements"].items():
        for name, v in table.items():
            if name.startswith("_") or name == "caption_b1_1tok":
                continue
            if name.startswith("caption_b"):
                b = int(name.split("_b")[1])
                ours, theirs = f"{b / v['ours_s']:.2f} img/s", f"{b / v['theirs_s']:.2f} img/s"
                label = f"captioning, batch {b}"
            else:
                ours, theirs = f"{1000 * v['ours_s']:.1f} ms", f"{1000 * v['theirs_s']:.1f} ms"
                label = "time to first token, batch 1"
            ratio = f"{v['ratio_median']:.2f}x [{v['ratio_min']:.2f}-{v['ratio_max']:.2f}]"
            lines.append(f"| {label} | {ours} | {PEERS[peer]} | {theirs} | {ratio} |")
        rates = report["decode_tok_s_b1"][peer]
        lines.append(
            f"| decode tokens/s, batch 1 | {rates['ours']:.0f} | {PEERS[peer]} | "
            f"{rates['theirs']:.0f} | {rates['ours'] / rates['theirs']:.2f}x |"
        )
    if "caption_b8_flops" in report:
        f = report["caption_b8_flops"]
        lines += [
            "",
            f"A batch-8 caption is {f['gflop']:.2f} GFLOP (PyTorch's counter); ours ran it at "
            f"{f['gflops']:.0f} GFLOP/s: **{100 * f['share_of_matmul_peak']:.0f}%** of the "
            "matmul peak measured in this run.",
        ]
    if "bandwidth" in report:
        b, q = report["bandwidth"], report["int8"]
        lines += [
            "",
            f"Size `{b['size']}` ({b['parameters'] / 1e6:.0f}M parameters, decoder "
            f"{b['decoder_mb']:.0f} MB fp32): batch-1 decode {b['decode_tok_s']:.1f} tokens/s = "
            f"{b['achieved_gbs']:.1f} GB/s of weights read, "
            f"**{100 * b['fraction_of_bandwidth']:.0f}%** "
            f"[{100 * b['fraction_min']:.0f}-{100 * b['fraction_max']:.0f}%] of the memory "
            f"bandwidth read beside each round ({min(b['bandwidth_gbs_rounds']):.1f}-"
            f"{max(b['bandwidth_gbs_rounds']):.1f} GB/s). "
            f"int8 (eager): {q['int8_tok_s']:.1f} vs fp32 "
            f"{q['fp32_tok_s']:.1f} tokens/s = {q['speedup_median']:.2f}x "
            f"[{q['speedup_min']:.2f}-{q['speedup_max']:.2f}].",
        ]
    return "\n".join(lines)


def save_json(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")
