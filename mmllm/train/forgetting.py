"""The forgetting report: a fine-tune's held-out scores before and after, and what dropped.

The initial model's held-out sets (``training_data.json``'s ``heldout``, see
``mmllm.train.replay``) are scored with the initial weights before the first step and with the
final weights after the last; the new data's held-out set too. ``report`` lines them up, and a
skill counts as dropped when its accuracy fell by more than ``DROP_POINTS`` points and by more
than twice the sampling error of the difference (so that 20 questions do not cry wolf).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Protocol

# the scores a report compares, in this order, and what each is called in it
SKILLS = {
    "image": "image questions",
    "audio": "audio questions",
    "both": "image+audio questions",
    "caption_attributes": "caption attributes",
    "caption_attributes/image": "caption attributes (image)",
    "caption_attributes/audio": "caption attributes (audio)",
    "overall": "all questions",
    "photo/caption": "photo captions",
    "photo/vqa": "photo questions",
}
DROP_POINTS = 2.0
REPORT_JSON, SUMMARY_MD, PLOT_PNG = "forgetting.json", "summary.md", "forgetting.png"


class Scorer(Protocol):
    """What training asks of evaluation, without importing it (``mmllm.eval.run.HeldOutScorer``
    is the one the CLI passes): ``{metric: {"accuracy", "n"}}`` of a model in eval mode on
    records, or on the first ``n`` records of a data spec (``synthetic:heldout``, a JSONL)."""

    def score(self, model, tokenizer, records: list) -> dict: ...

    def score_data(self, model, tokenizer, data: str, n: int, seed: int = 0) -> dict: ...


def heldout_scores(
    scorer: Scorer, model, tokenizer, sets: list[str], n: int, seed: int = 0
) -> dict[str, dict]:
    """``{set: {skill: {"accuracy", "n"}}}`` of ``model`` on the first ``n`` records of each."""
    model.eval()
    out = {}
    for spec in sets:
        scores = scorer.score_data(model, tokenizer, spec, n=n, seed=seed)
        out[spec] = {
            k: {"accuracy": float(v["accuracy"]), "n": int(v["n"])}
            for k, v in scores.items()
            if isinstance(v, dict) and "accuracy" in v and (k in SKILLS or "/" not in k)
        }
    return out


def report(before: dict[str, dict], after: dict[str, dict]) -> list[dict]:
    """One row per (set, skill) scored both times: before, after, change (points), dropped."""
    rows = []
    for spec, scores in before.items():
        later = after.get(spec, {})
        keys = [k for k in SKILLS if k in scores and k in later]
        keys += sorted(k for k in scores if k in later and k not in SKILLS)
        for key in keys:
            p0, p1, n = scores[key]["accuracy"], later[key]["accuracy"], scores[key]["n"]
            change = 100 * (p1 - p0)
            spread = math.sqrt(max(p0 * (1 - p0) + p1 * (1 - p1), 1e-9) / max(n, 1))
            dropped = -change > max(DROP_POINTS, 200 * spread)
            rows.append(
                dict(set=spec, skill=key, before=p0, after=p1, change=change, n=n, dropped=dropped)
            )
    return rows


def markdown(rows: list[dict]) -> str:
    """The report as a Markdown table, then one plain sentence per dropped skill."""
    lines = [
        "| held-out set | skill | before | after | change | n |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = " **dropped**" if r["dropped"] else ""
        lines.append(
            f"| {r['set']} | {SKILLS.get(r['skill'], r['skill'])} | {r['before']:.1%} | "
            f"{r['after']:.1%} | {r['change']:+.1f}{mark} | {r['n']} |"
        )
    lines.append("")
    lines.extend(verdict(rows))
    return "\n".join(lines)


def verdict(rows: list[dict]) -> list[str]:
    """Plain sentences: which skills dropped, or that none did."""
    dropped = [r for r in rows if r["dropped"]]
    if not rows:
        return ["No held-out set of the initial model was scored, so forgetting is not measured."]
    if not dropped:
        return [
            f"No skill dropped by more than {DROP_POINTS:g} points (and twice its sampling error)."
        ]
    return [
        f"DROPPED: {SKILLS.get(r['skill'], r['skill'])} on {r['set']} fell {-r['change']:.1f} "
        f"points, {r['before']:.1%} -> {r['after']:.1%}."
        for r in dropped
    ]


def save(out: Path, rows: list[dict], extra: dict) -> None:
    """``out/forgetting.json``: the rows and what the run was (``extra``)."""
    (out / REPORT_JSON).write_text(json.dumps({**extra, "rows": rows}, indent=2) + "\n")


def plot(rows: list[dict], out: Path) -> Path | None:
    """Before and after as paired bars, one pair per (set, skill), dropped ones in red."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{SKILLS.get(r['skill'], r['skill'])}\n{r['set']}" for r in rows]
    ys = range(len(rows))
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.2))
    ax.barh(
        [y + 0.2 for y in ys],
        [100 * r["before"] for r in rows],
        0.4,
        color="tab:gray",
        label="before",
    )
    colours = ["tab:red" if r["dropped"] else "tab:green" for r in rows]
    ax.barh(
        [y - 0.2 for y in ys],
        [100 * r["after"] for r in rows],
        0.4,
        color=colours,
        label="after (red: dropped)",
    )
    ax.set_yticks(list(ys), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%)")
    ax.set_title("held-out scores before and after fine-tuning")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
