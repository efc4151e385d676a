"""``mmllm bench --same-weights FAMILY``: a published model's size, run by transformers and by
mmllm on the same random weights.

Both worker processes build the family's model from one seed (``peers.published_model``); ours
converts it (``mmllm.weights.hf_import``) and runs it as ``mmllm.load`` would. Rounds alternate
between them. Each round times captioning (batch 1 and 8, exactly N greedy tokens, no early
end), the first token, and a one-token caption; decode tokens/s come from the difference. The
memory bandwidth is read beside each round, and each round's batch-1 decode is set against it:
a step must read every decoder weight once (``peers.weights_read_per_token``). int8 (ours) is
timed against fp32 the same way, and its greedy tokens are compared with fp32's on 100
captions.
"""

from __future__ import annotations

import statistics

import torch

from mmllm.bench.run import (
    Comparison,
    Worker,
    alternate,
    big_tensor,
    int8_against_fp32,
    machine_limits,
    memory_bandwidth,
    timing_plan,
)

CAPTIONS_COMPARED = 100


def run_same_weights(
    family: str, rounds: int = 5, new_tokens: int = 32, threads: int | None = None
) -> dict:
    """Every measurement (see the module docstring), as a JSON-ready dict."""
    threads = threads or torch.get_num_threads()
    size = f"same:{family}"
    report: dict = {"family": family, "threads": threads, "rounds": rounds}
    report["new_tokens"] = new_tokens
    report["machine"] = machine_limits(threads, "cpu")
    big = big_tensor(torch.device("cpu"))
    ours = Worker("mmllm", size, threads, "cpu", None)
    theirs = Worker("transformers", size, threads, "cpu", None)
    try:
        report["parameters"] = {
            "mmllm": ours.info["parameters"],
            "transformers": theirs.info["parameters"],
        }
        decode_bytes = ours.info["decode_bytes"]
        ours.ask(op="reset_peak")  # from here: the model and its runs, not its construction
        theirs.ask(op="reset_peak")  # (ours converts the other's model, then frees it)
        readings: list[float] = []  # the memory bandwidth beside each round
        plan = timing_plan((1, 8), new_tokens)
        table = alternate(
            ours, theirs, plan, rounds, lambda: readings.append(memory_bandwidth(big, repeats=3))
        )
        same = ours.ask(op="tokens", batch=2, new_tokens=8) == theirs.ask(
            op="tokens", batch=2, new_tokens=8
        )
        report["same_tokens_as_transformers"] = same
        report["measurements"] = {k: v.summary() for k, v in table.items()}
        report["peak_rss_mb"] = {"mmllm": ours.ask(op="rss"), "transformers": theirs.ask(op="rss")}
    finally:
        theirs.close()
    try:
        report["bandwidth"] = _bandwidth(table, readings, decode_bytes, new_tokens)
        report["int8"] = _int8(ours, size, threads, rounds, new_tokens)
    finally:
        ours.close()
    return report


def _rates(comparison_full: Comparison, comparison_one: Comparison, n: int, side: str):
    """Per round, batch-1 decode tokens/s after the first token."""
    full, one = getattr(comparison_full, side), getattr(comparison_one, side)
    return [(n - 1) / max(f - o, 1e-9) for f, o in zip(full, one, strict=True)]


def _bandwidth(table: dict, readings: list[float], decode_bytes: int, n: int) -> dict:
    out = {"decode_mb": decode_bytes / 1e6, "bandwidth_gbs_rounds": readings}
    for side in ("ours", "theirs"):
        rates = _rates(table["caption_b1"], table["caption_b1_1tok"], n, side)
        shares = [decode_bytes * r / 1e9 / gbs for r, gbs in zip(rates, readings, strict=True)]
        out[side] = {
            "decode_tok_s": statistics.median(rates),
            "share_median": statistics.median(shares),
            "share_min": min(shares),
            "share_max": max(shares),
        }
    return out


def _int8(fp32: Worker, size: str, threads: int, rounds: int, n: int) -> dict:
    """int8 against fp32 (ours both): batch-1 decode rates, and greedy agreement."""
    int8 = Worker("mmllm", size, threads, "cpu", "int8")
    try:
        report = int8_against_fp32(fp32, int8, n, rounds)
        same = tokens = agree = 0
        batch = 10
        for seed in range(CAPTIONS_COMPARED // batch):
            cmd = {"op": "tokens", "batch": batch, "new_tokens": n, "seed": 1000 + seed}
            for a, b in zip(fp32.ask(**cmd)["ids"], int8.ask(**cmd)["ids"], strict=True):
                same += a == b
                tokens += len(a)
                agree += next(
                    (i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a)
                )
    finally:
        int8.close()
    return {
        **report,
        "captions": CAPTIONS_COMPARED,
        "identical_captions": same / CAPTIONS_COMPARED,
        "tokens_before_first_difference": agree / tokens,
    }


def markdown(report: dict) -> str:
    """The report as Markdown."""
    m, meas = report["machine"], report["measurements"]
    rss, bw, q = report["peak_rss_mb"], report["bandwidth"], report["int8"]

    def ratio(name: str) -> str:
        v = meas[name]
        return f"**{v['ratio_median']:.2f}x** [{v['ratio_min']:.2f}-{v['ratio_max']:.2f}]"

    def per_s(name: str, batch: int) -> tuple[str, str]:
        v = meas[name]
        return f"{batch / v['ours_s']:.2f} img/s", f"{batch / v['theirs_s']:.2f} img/s"

    b1, b8 = per_s("caption_b1", 1), per_s("caption_b8", 8)
    ours_bw, their_bw = bw["ours"], bw["theirs"]
    lines = [
        f"`{report['family']}` at its published size ({report['parameters']['mmllm'] / 1e6:.0f}M "
        f"parameters), random weights from one seed, CPU fp32, {report['threads']} threads, "
        f"exactly {report['new_tokens']} greedy tokens, {report['rounds']} alternating rounds; "
        f"measured {m['matmul_gflops']:.0f} GFLOP/s matmul. Same tokens as transformers: "
        f"{report['same_tokens_as_transformers']}. Ratio = transformers' time / ours.",
        "",
        "| measurement | mmllm | transformers | ratio |",
        "|---|---|---|---|",
        f"| captioning, batch 1 | {b1[0]} | {b1[1]} | {ratio('caption_b1')} |",
        f"| captioning, batch 8 | {b8[0]} | {b8[1]} | {ratio('caption_b8')} |",
        f"| time to first token, batch 1 | {1000 * meas['ttft_b1']['ours_s']:.0f} ms | "
        f"{1000 * meas['ttft_b1']['theirs_s']:.0f} ms | {ratio('ttft_b1')} |",
        f"| decode tokens/s, batch 1 | {ours_bw['decode_tok_s']:.1f} | "
        f"{their_bw['decode_tok_s']:.1f} | "
        f"{ours_bw['decode_tok_s'] / their_bw['decode_tok_s']:.2f}x |",
        f"| share of the memory-bandwidth limit | **{100 * ours_bw['share_median']:.0f}%** "
        f"[{100 * ours_bw['share_min']:.0f}-{100 * ours_bw['share_max']:.0f}] | "
        f"{100 * their_bw['share_median']:.0f}% | |",
        f"| peak RSS from the model on (MB) | {rss['mmllm']['model_rss_mb']:.0f} | "
        f"{rss['transformers']['model_rss_mb']:.0f} | |",
        "",
        f"A decode step reads {bw['decode_mb']:.0f} MB of weights; bandwidth read beside each "
        f"round: {min(bw['bandwidth_gbs_rounds']):.1f}-{max(bw['bandwidth_gbs_rounds']):.1f} "
        f"GB/s. int8 (ours): {q['int8_tok_s']:.1f} vs fp32 {q['fp32_tok_s']:.1f} tokens/s = "
        f"**{q['speedup_median']:.2f}x** [{q['speedup_min']:.2f}-{q['speedup_max']:.2f}]; of "
        f"{q['captions']} greedy captions, {100 * q['identical_captions']:.0f}% identical to "
        f"fp32's, {100 * q['tokens_before_first_difference']:.0f}% of tokens before the first "
        "difference.",
    ]
    return "\n".join(lines)
