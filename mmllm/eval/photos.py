"""Real-photo scores: does the text name an acceptable noun, and what would the teachers say.

A real-photo record (``mmllm.data.real_photos``) lists what is acceptable: a caption's main
nouns, a question's answers. A caption or open answer is right when it names any of them as
whole words (a plural counts: "two cats" names "cat"); a yes/no or number answer must equal one.

The *teacher-label oracle* is the text the recognizers alone give: the classifier's top-1 label
line (all its synonyms, e.g. "tabby, tabby cat") and the detector's objects, matched the same
way. A model that reads the recognizers should name at least what they name.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

from encoders.recognizers import COCO_OFFSET, N_CLASSES
from mmllm.data.collate import Record
from mmllm.eval.degenerate import degenerate_reason
from mmllm.eval.metrics import normalize_answer
from mmllm.evidence import names

EXACT_ANSWERS = {"yes", "no"}


def accepted(record: Record, text: str) -> bool:
    """Whether ``text`` is right for a record that lists what is acceptable."""
    exact = {normalize_answer(a) for a in record.accept}
    if exact & EXACT_ANSWERS or all(a.isdigit() for a in exact):
        return normalize_answer(text) in exact
    return any(names(text, a) for a in record.accept)


def accept_scores(records: Sequence[Record], predictions: Sequence[str]) -> dict:
    """For records with acceptable answers/nouns: the share right, overall, per caption or
    question and per source (``photo/caption``, ``photo/vqa``, ``photo/caption/<category>``,
    ``photo/qtype/<qtype>``), and the share of degenerate texts (``photo/degenerate``)."""
    hits: dict[str, list[int]] = defaultdict(list)
    bad = []
    for record, pred in zip(records, predictions, strict=True):
        if not record.accept:
            continue
        hit = int(accepted(record, pred))
        kind = "caption" if record.task == "caption" else "vqa"
        hits[f"photo/{kind}"].append(hit)
        if record.category:
            hits[f"photo/{kind}/{record.category.removeprefix('photo/')}"].append(hit)
        if record.qtype:
            hits[f"photo/qtype/{record.qtype}"].append(hit)
        bad.append(int(degenerate_reason(pred) is not None))
    scores = {k: {"accuracy": sum(v) / len(v), "n": len(v)} for k, v in sorted(hits.items())}
    if bad:
        scores["photo/degenerate"] = {"accuracy": sum(bad) / len(bad), "n": len(bad)}
    return scores


def oracle_text(rows, labels: list[str], coco_names: dict[int, str]) -> str:
    """The recognizers' own words for one picture: the top-1 label line and detected objects
    (rows as ``encoders.recognizers``; ``labels``: the classifier's label lines)."""
    parts = []
    for label, score, *_ in rows:
        label = round(label)
        if label < N_CLASSES and not parts:
            parts.append(labels[label])
        elif label >= COCO_OFFSET and score >= 0.5:
            parts.append(coco_names.get(label - COCO_OFFSET, ""))
    return ", ".join(p for p in parts if p)


def oracle_prediction(record: Record, text: str) -> str:
    """What the oracle answers ``record`` with, given its text for the picture: yes/no by
    whether it names the asked noun, a count by how often the detector named the thing, else
    the text itself."""
    exact = {normalize_answer(a) for a in record.accept}
    if exact & EXACT_ANSWERS:
        match = re.search(r"is there (?:an? |any )?(.+?)(?: in the picture)?\?$", record.prompt)
        return "yes" if match and names(text, match.group(1)) else "no"
    return text
