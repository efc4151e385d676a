"""Scores: VQA exact match (after VQAv2-style normalisation) per category and question type."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

from mmllm.data.collate import Record
from mmllm.data.synthetic import caption_attributes
from mmllm.data.tuxpaint import main_noun, mentions

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


def answer_confusion(records: Sequence[Record], predictions: Sequence[str]) -> dict:
    """Per question type, how often each reference answer got each (normalised) prediction:
    ``{qtype: {target: {prediction: n}}}``. Accuracy alone hides a model that answers from the
    answers' prior (mmllm-tiny once said "1" to every "how many stars?", right whenever one was
    the answer)."""
    table: dict[str, dict[str, dict[str, int]]] = {}
    for record, pred in zip(records, predictions, strict=True):
        if record.task != "vqa" or not record.qtype:
            continue
        row = table.setdefault(record.qtype, {}).setdefault(normalize_answer(record.target), {})
        guess = normalize_answer(pred)
        row[guess] = row.get(guess, 0) + 1
    return {
        q: {t: dict(sorted(r.items())) for t, r in sorted(v.items())}
        for q, v in sorted(table.items())
    }


IMAGE_ATTRIBUTES = ("count", "shapes", "colors")
AUDIO_ATTRIBUTES = ("sound", "pitch", "timbre", "beeps", "direction")


def caption_attributes_match(prediction: str, reference: str, category: str | None) -> bool:
    """Whether ``prediction`` names every colour, shape kind (with its count) and the total count
    of the reference image caption, and nothing else of those; for sounds, the kind of sound,
    pitch, timbre, beep count and direction. Parsed by the synthetic world's caption parser."""

    keys = AUDIO_ATTRIBUTES if category == "audio" else IMAGE_ATTRIBUTES
    pred, ref = caption_attributes(prediction), caption_attributes(reference)
    return all(pred[k] == ref[k] for k in keys)


def hallucinated(prediction: str, reference: str, category: str | None) -> bool:
    """CHAIR-style: whether a synthetic caption names a shape kind or colour (pictures) or a
    kind of sound (sounds) that the reference, written from the scene, does not have."""

    pred, ref = caption_attributes(prediction), caption_attributes(reference)
    if category == "audio":
        return pred["sound"] is not None and pred["sound"] != ref["sound"]
    return bool(
        set(pred["shapes"]) - set(ref["shapes"]) or set(pred["colors"]) - set(ref["colors"])
    )


def hallucination_scores(records: Sequence[Record], predictions: Sequence[str]) -> dict:
    """The share of synthetic captions that name something not there (``hallucinated``)."""
    hits: dict[str, list[int]] = defaultdict(list)
    for record, pred in zip(records, predictions, strict=True):
        if record.task == "caption" and record.category in ("image", "audio"):
            bad = int(hallucinated(pred, record.target, record.category))
            hits["hallucination"].append(bad)
            hits[f"hallucination/{record.category}"].append(bad)
    return {k: {"rate": sum(v) / len(v), "n": len(v)} for k, v in sorted(hits.items())}


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
    words without punctuation; one reference per caption), overall and, when the captions come
    in several categories, per category (``caption_bleu4/<category>``)."""
    captions = [(r, p) for r, p in zip(records, predictions, strict=True) if r.task == "caption"]
    if not captions:
        return {}
    scores = _bleu_cider(captions, "")
    categories = sorted({r.category for r, _ in captions if r.category})
    if len(categories) > 1:
        for category in categories:
            scores.update(_bleu_cider([c for c in captions if c[0].category == category], category))
    return scores


def _bleu_cider(captions: list[tuple[Record, str]], category: str) -> dict:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    def words(text: str) -> str:
        return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())

    captions = [(r, p) for r, p in captions if words(r.target)]  # placeholders: no reference
    if not captions:
        return {}
    refs = {i: [words(r.target)] for i, (r, _) in enumerate(captions)}
    preds = {i: [words(p) or "empty"] for i, (_, p) in enumerate(captions)}
    bleu = Bleu(4).compute_score(refs, preds, verbose=0)[0][3]
    cider = Cider().compute_score(refs, preds)[0]
    suffix = f"/{category}" if category else ""
    return {
        f"caption_bleu4{suffix}": {"score": float(bleu), "n": len(refs)},
        f"caption_cider{suffix}": {"score": float(cider), "n": len(refs)},
    }


def noun_mention_scores(records: Sequence[Record], predictions: Sequence[str]) -> dict:
    """Tux Paint stamps (``mmllm.data.tuxpaint``): the share of generated texts that name the
    main noun of the reference description, per category (``noun/stamp_image``...)."""

    hits: dict[str, list[int]] = defaultdict(list)
    for record, pred in zip(records, predictions, strict=True):
        if record.category and record.category.startswith("stamp_"):
            hits[f"noun/{record.category}"].append(int(mentions(pred, main_noun(record.target))))
    return {k: {"accuracy": sum(v) / len(v), "n": len(v)} for k, v in sorted(hits.items())}
