"""Scores: VQA exact match (after VQAv2-style normalisation) per category and question type."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

from mmllm.data.collate import Record

NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
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


IMAGE_ATTRIBUTES = ("count", "shapes", "colors")
AUDIO_ATTRIBUTES = ("sound", "pitch", "timbre", "beeps", "direction")


def caption_attributes_match(prediction: str, reference: str, category: str | None) -> bool:
    """Whether ``prediction`` names every colour, shape kind (with its count) and the total count
    of the reference image caption, and nothing else of those; for sounds, the kind of sound,
    pitch, timbre, beep count and direction. Parsed by the synthetic world's caption parser."""
    from mmllm.data.synthetic import caption_attributes

    keys = AUDIO_ATTRIBUTES if category == "audio" else IMAGE_ATTRIBUTES
    pred, ref = caption_attributes(prediction), caption_attributes(reference)
    return all(pred[k] == ref[k] for k in keys)


def caption_attribute_scores(records: Sequence[Record], predictions: Sequence[str]) -> dict:
    """Share of captions whose attributes all match (see ``caption_attributes_match``)."""

    hits: dict[str, list[int]] = defaultdict(list)
    for record, pred in zip(records, predictions, strict=True):
        if record.task != "caption":
            continue
        hit = int(caption_attributes_match(pred, record.target, record.category))
        hits["caption_attributes"].append(hit)
        if record.category:
            hits[f"caption_attributes/{record.category}"].append(hit)
    return {k: {"accuracy": sum(v) / len(v), "n": len(v)} for k, v in sorted(hits.items())}


def caption_text_scores(records: Sequence[Record], predictions: Sequence[str]) -> dict:
    """Corpus BLEU-4 and CIDEr-D of the caption records (pycocoevalcap's scorers, lower-cased
    words without punctuation; one reference per caption)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    refs, preds = {}, {}
    for i, (record, pred) in enumerate(zip(records, predictions, strict=True)):
        if record.task == "caption":
            refs[i] = [" ".join(re.sub(r"[^\w\s]", " ", record.target.lower()).split())]
            preds[i] = [" ".join(re.sub(r"[^\w\s]", " ", pred.lower()).split()) or "empty"]
    if not refs:
        return {}
    bleu = Bleu(4).compute_score(refs, preds, verbose=0)[0][3]
    cider = Cider().compute_score(refs, preds)[0]
    return {
        "caption_bleu4": {"score": float(bleu), "n": len(refs)},
        "caption_cider": {"score": float(cider), "n": len(refs)},
    }
