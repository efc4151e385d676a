"""``mmllm eval``: answer a held-out set with a checkpoint and score it per category."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from encoders.recognizers import Recognizer, imagenet_labels, to_rgb_array
from mmllm.confidence import Calibration, MediaDistance, checkpoint_trust
from mmllm.data.label_words import coco_words
from mmllm.data.sources import build_source
from mmllm.eval.degenerate import degenerate_reason
from mmllm.eval.metrics import (
    answer_confusion,
    caption_attribute_scores,
    caption_text_scores,
    hallucination_scores,
    noun_mention_scores,
    vqa_scores,
)
from mmllm.eval.photos import accept_scores, oracle_prediction, oracle_text
from mmllm.eval.predict import predict
from mmllm.model.multimodal import MultimodalLM
from mmllm.packed import pack_linears
from mmllm.processing import load_image
from mmllm.quantize import quantize as quantize_model
from mmllm.tokenizer import Tokenizer
from mmllm.weights.checkpoint import load_model, load_tokenizer, resolve_checkpoint


def score_records(records, predictions) -> dict:
    """Every metric that applies to ``records``: VQA exact match, caption attributes, BLEU/CIDEr."""
    scores = vqa_scores(records, predictions)
    if any(r.task == "caption" for r in records):
        scores.update(caption_text_scores(records, predictions))
        if any(r.category in ("image", "audio") for r in records if r.task == "caption"):
            scores.update(caption_attribute_scores(records, predictions))
            scores.update(hallucination_scores(records, predictions))
    scores.update(noun_mention_scores(records, predictions))
    scores.update(accept_scores(records, predictions))
    bad = [degenerate_reason(p) is not None for p in predictions]
    if bad:  # mmllm.eval.degenerate: glued, tripled or looping text
        scores["degenerate"] = {"rate": sum(bad) / len(bad), "n": len(bad)}
    return scores


def oracle_predictions(records, progress: bool = False) -> list[str]:
    """The teacher-label oracle's answer to each record (``mmllm.eval.photos``): what the
    recognizers alone say about its first image."""
    recognizer, labels = Recognizer(cache={}), imagenet_labels()
    coco = {cid: word.name for cid, word in coco_words().items()}
    out = []
    for record in tqdm(records, desc="oracle", disable=not progress, unit="record"):
        if not record.images:
            out.append("")
            continue
        rows = recognizer(to_rgb_array(load_image(record.images[0])))
        out.append(oracle_prediction(record, oracle_text(rows.tolist(), labels, coco)))
    return out


class HeldOutScorer:
    """Held-out scoring for a training run (``mmllm.train.forgetting.Scorer``): ``mmllm train``
    passes one to the trainer, which never imports evaluation itself."""

    def __init__(self, batch_size: int = 64):
        self.batch_size = batch_size

    def score(self, model: MultimodalLM, tokenizer: Tokenizer, records: list) -> dict:
        return score_records(records, predict(model, tokenizer, records, self.batch_size))

    def score_data(
        self, model: MultimodalLM, tokenizer: Tokenizer, data: str, n: int, seed: int = 0
    ) -> dict:
        return evaluate(model, tokenizer, data, n=n, seed=seed, progress=True)


def evaluate(
    model: MultimodalLM,
    tokenizer: Tokenizer,
    data: str,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
    drop: str | None = None,
    oracle: bool = False,
    repetition_controls: bool = True,
    compile: bool | None = False,
    trust: tuple[Calibration | None, MediaDistance | None] = (None, None),
) -> dict:
    """Scores of ``model`` on ``data`` (``synthetic:<split>`` or a JSONL file).

    drop: "audio" or "image" removes that medium from every record (to prove the model uses it).
    oracle: score the teacher-label oracle instead of the model (``mmllm.eval.photos``).
    repetition_controls: False generates without ``mmllm.repetition``'s masks.
    trust: the checkpoint's calibration and media statistics (``predict``'s).
    """
    source = build_source(data, seed=seed, shuffle=False)
    count = min(n or len(source), len(source))
    records = [source[i] for i in range(count)]
    if drop == "audio":
        for r in records:
            r.audio = []
    elif drop == "image":
        for r in records:
            r.images = []
    if oracle:
        predictions = oracle_predictions(records, progress)
    else:
        predictions = predict(
            model,
            tokenizer,
            records,
            batch_size,
            progress=progress,
            repetition_controls=repetition_controls,
            compile=compile,
            trust=trust,
        )
    scores = score_records(records, predictions)
    scores["_meta"] = {
        "data": data,
        "n": count,
        "seed": seed,
        "drop": drop,
        "oracle": oracle,
        "repetition_controls": repetition_controls,
    }
    scores["_confusion"] = answer_confusion(records, predictions)
    scores["_examples"] = [
        {"prompt": r.prompt, "target": r.target, "prediction": p, "category": r.category}
        for r, p in list(zip(records, predictions, strict=True))[:20]
    ]
    if any(r.accept for r in records):  # real photos: every answer, to read the failures
        scores["_photo_answers"] = [
            {
                "id": r.source,
                "image": Path(r.images[0]).name if r.images else "",
                "prompt": r.prompt,
                "accept": r.accept,
                "prediction": p,
            }
            for r, p in zip(records, predictions, strict=True)
            if r.accept
        ]
    return scores


def run_eval(
    checkpoint: str | Path,
    data: str,
    n: int | None,
    seed: int,
    out: Path | None,
    *,
    drop: str | None = None,
    quantize: str | None = None,
    oracle: bool = False,
    repetition_controls: bool = True,
    compile: bool | None = None,
) -> dict:
    """Load ``checkpoint``, score it on ``data`` (see ``evaluate``), write JSON to ``out``.
    ``compile``: as ``mmllm.load``'s (None: when the number of records pays for it)."""
    model = load_model(checkpoint).eval()
    if quantize is not None:
        model = quantize_model(model, quantize)
    elif torch.cuda.is_available():
        model.cuda()
    else:
        pack_linears(model)
    scores = evaluate(
        model,
        load_tokenizer(checkpoint),
        data,
        n,
        seed,
        progress=True,
        drop=drop,
        oracle=oracle,
        repetition_controls=repetition_controls,
        compile=compile,
        trust=checkpoint_trust(resolve_checkpoint(checkpoint)),
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(scores, indent=2) + "\n")
    return scores


def markdown_table(scores: dict) -> str:
    """The scores as a Markdown table, one row per metric."""
    lines = ["| metric | score | n |", "|---|---|---|"]
    for key, value in scores.items():
        if key.startswith("_"):
            continue
        figure = value.get("accuracy", value.get("rate", value.get("score")))
        percent = "accuracy" in value or "rate" in value
        unit = f"{100 * figure:.1f}%" if percent else f"{figure:.3f}"
        lines.append(f"| {key} | {unit} | {value['n']} |")
    return "\n".join(lines)
