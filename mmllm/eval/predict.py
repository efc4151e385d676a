"""Batched greedy answers for a list of records (shared by evaluation and training)."""

from __future__ import annotations

from collections.abc import Sequence

from tqdm import tqdm

from mmllm.confidence import Calibration, MediaDistance
from mmllm.data.collate import Record
from mmllm.generate import SamplingConfig
from mmllm.model.multimodal import MultimodalLM
from mmllm.tasks import MMLLM
from mmllm.tokenizer import Tokenizer

FIELDS = ("prompt", "images", "audio")  # what generation reads of a record


def predict(
    model: MultimodalLM,
    tokenizer: Tokenizer,
    records: Sequence[Record],
    batch_size: int = 32,
    max_new_tokens: int = 48,
    progress: bool = False,
    repetition_controls: bool = True,
    compile: bool | None = False,
    trust: tuple[Calibration | None, MediaDistance | None] = (None, None),
) -> list[str]:
    """The model's greedy output text for each record's media and prompt (the API's batched
    generation, ``MMLLM``, so evaluation measures exactly what users get). A batch whose
    prompts leave less room in the context than ``max_new_tokens`` generates what fits.
    ``repetition_controls=False``: without ``mmllm.repetition``'s masks (to measure them).
    ``compile``: as ``mmllm.load``'s; False (the default) for a model still training.
    ``trust``: the checkpoint's calibration and media statistics (``checkpoint_trust``): with
    them, existence questions about photos are read off the recognizers as ``ask`` does."""
    calibration, distance = trust
    api = MMLLM(  # long clips are cut
        model,
        tokenizer,
        truncate_audio=True,
        compile=compile,
        calibration=calibration,
        media_distance=distance,
    )
    api.expect(len(records))
    context = model.config.decoder.max_seq_len
    outputs: list[str] = []
    starts = range(0, len(records), batch_size)
    for start in tqdm(starts, desc="predict", disable=not progress, unit="batch"):
        chunk = records[start : start + batch_size]
        read_off = [_read_off_answer(api, r) for r in chunk]  # as ask answers them
        todo = [r for r, answer in zip(chunk, read_off, strict=True) if answer is None]
        texts = iter([])
        if todo:
            longest = max(len(tokenizer.prompt_ids(r.prompt)) for r in todo)
            room = max(1, min(max_new_tokens, context - longest))
            sampling = SamplingConfig(max_new_tokens=room, repetition_guard=repetition_controls)
            prompts, images, audio = ([getattr(r, k) for r in todo] for k in FIELDS)
            texts = iter(api.generate_batch(prompts, images, audio, sampling))
        outputs.extend(answer if answer is not None else next(texts).strip() for answer in read_off)
    return outputs


def _read_off_answer(api: MMLLM, record: Record) -> str | None:
    """An existence or counting question about one photo, answered off the recognizers'
    findings as ``MMLLM.ask`` does (``mmllm.evidence``); None for a record the model
    answers."""
    if record.task == "caption" or len(record.images) != 1 or record.audio:
        return None
    answer = api.read_off_answer(record.images[0], record.prompt)
    return None if answer is None else answer.guess
