"""Training curves (loss, and held-out accuracy per category) from ``metrics.jsonl`` to a PNG."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def plot_metrics(metrics: Path | Sequence[Path], out: Path) -> Path | None:
    """Draw ``metrics`` (JSONL rows from the trainer) into ``out``; None if there is nothing.

    Several files are stages of one training, in order: each later one's steps continue the
    step count of the one before, and a dotted line marks where it starts."""
    paths = [metrics] if isinstance(metrics, Path) else list(metrics)
    train, evals, starts = [], [], []
    for path in paths:
        if not path.is_file():
            return None
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        offset = train[-1]["step"] if train else 0
        if train:
            starts.append(offset)
        rows = [{**r, "step": r["step"] + offset} for r in rows if "step" in r]
        train += [r for r in rows if "loss" in r]
        evals += [r for r in rows if "eval" in r]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for ax in (ax_loss, ax_acc):
        for step in starts:
            ax.axvline(step, color="grey", ls=":", lw=1)
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
    ax_loss.set(xlabel="step", ylabel="training loss", yscale="log", title="loss")
    for key in ("overall", "image", "audio", "both", "caption_attributes"):
        points = [(r["step"], r["eval"][key]["accuracy"]) for r in evals if key in r["eval"]]
        if points:
            ax_acc.plot(*zip(*points, strict=True), marker="o", label=key)
    ax_acc.set(xlabel="step", ylabel="held-out accuracy", ylim=(0, 1), title="held-out")
    if ax_acc.lines[len(starts) :]:  # curves besides the stage markers
        ax_acc.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
