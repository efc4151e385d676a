"""Training curves (loss, and held-out accuracy per category) from ``metrics.jsonl`` to a PNG."""

from __future__ import annotations

import json
from pathlib import Path


def plot_metrics(metrics: Path, out: Path) -> Path | None:
    """Draw ``metrics`` (JSONL rows from the trainer) into ``out``; None if there is nothing."""
    if not metrics.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval" in r]
    if not train:
        return None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
    ax_loss.set(xlabel="step", ylabel="training loss", yscale="log", title="loss")
    for key in ("overall", "image", "audio", "both", "caption_attributes"):
        points = [(r["step"], r["eval"][key]["accuracy"]) for r in evals if key in r["eval"]]
        if points:
            ax_acc.plot(*zip(*points, strict=True), marker="o", label=key)
    ax_acc.set(xlabel="step", ylabel="held-out accuracy", ylim=(0, 1), title="held-out")
    if evals:
        ax_acc.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
