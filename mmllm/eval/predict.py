"""Batched greedy answers for a list of records (shared by evaluation and training)."""

from __future__ import annotations

from collections.abc import Sequence

from tqdm import tqdm

from mmllm.data.collate import Record
from mmllm.generate import SamplingConfig
from mmllm.model.multimodal import MultimodalLM
from mmllm.tasks import MMLLM
from mmllm.tokenizer import Tokenizer


def predict(
    model: MultimodalLM,
    tokenizer: Tokenizer,
    records: Sequence[Record],
    batch_size: int = 32,
    max_new_tokens: int = 48,
    progress: bool = False,
    repetition_controls: bool = True,
    compile: bool | None = False,
) -> list[str]:
    """The model's greedy output text for each record's media and prompt (the API's batched
    generation, ``MMLLM``, so evaluation measures exactly what users get). A batch whose
    prompts leave less room in the context than ``max_new_tokens`` generates what fits.
    ``repetition_controls=False``: without ``mmllm.repetition``'s masks (to measure them).
    ``compile``: as ``mmllm.load``'s; False (the default) for a model still training."""
    api = MMLLM(model, tokenizer, truncate_audio=True, compile=compile)  # long clips are cut
    api.expect(len(records))
    context = model.config.decoder.max_seq_len
    outputs: list[str] = []
    starts = range(0, len(records), batch_size)
    for start in tqdm(starts, desc="predict", disable=not progress, unit="batch"):
        chunk = records[start : start + batch_size]
        prompts = [r.prompt for r in chunk]
        longest = max(len(tokenizer.prompt_ids(p)) for p in prompts)
        room = max(1, min(max_new_tokens, context - longest))
        sampling = SamplingConfig(max_new_tokens=room, repetition_guard=repetition_controls)
        texts = api.generate_batch(
            prompts, [r.images for r in chunk], [r.audio for r in chunk], sampling
        )
        outputs.extend(text.strip() for text in texts)
    return outputs
