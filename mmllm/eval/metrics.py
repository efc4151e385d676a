"""Scores: VQA exact match (after VQAv2-style normalisation) per category and question type."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

from mmllm.data.collate import Record

NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, number words as digits (as VQAv2 scores)."""
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return " ".join(NUMBER_WORDS.get(w, w) for w in words if w not in ARTICLES)


def vqa_scores(records: Sequence[Record], predictions: Sequence[str]) -> dict:
    """Exact-match accuracy overall, per category (image/audio/both) and per question type."""
    hits: dict[str, list[int]] = defaultdict(list)
    for record, pred in zip(records, predictions, strict=True):
        if record.task != "vqa":
            continue
        hit = int(normalize_answer(pred) == normalize_answer(record.target))
        hits["overall"].append(hit)
        if record.category:
            hits[record.category].append(hit)
        if record.qtype:
            hits[f"qtype/{record.qtype}"].append(hit)
    return {k: {"accuracy": sum(v) / len(v), "n": len(v)} for k, v in sorted(hits.items())}


def caption_attribute_scores(records: Sequence[Record], predictions: Sequence[str]) -> dict:
    """Share of captions whose colours, shapes and counts (or sound attributes) all match the
    reference's, parsed by the synthetic world's ``caption_attributes``."""
    from mmllm.data.synthetic import caption_attributes

    hits: dict[str, list[int]] = defaultdict(list)
    for record, pred in zip(records, predictions, strict=True):
        if record.task != "caption":
            continue
        hit = int(caption_attributes(pred) == caption_attributes(record.target))
        hits["caption_attributes"].append(hit)
        if record.category:
            hits[f"caption_attributes/{record.category}"].append(hit)
    return {k: {"accuracy": sum(v) / len(v), "n": len(v)} for k, v in sorted(hits.items())}
