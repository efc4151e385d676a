"""Batched greedy answers for a list of records (shared by evaluation and training)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm import tqdm

from mmllm.data.collate import Record
from mmllm.generate import SamplingConfig, autocast_for, generate_ids, left_pad
from mmllm.model import MultimodalLM
from mmllm.processing import MediaProcessor
from mmllm.tokenizer import Tokenizer


@torch.inference_mode()
def predict(
    model: MultimodalLM,
    tokenizer: Tokenizer,
    records: Sequence[Record],
    batch_size: int = 32,
    max_new_tokens: int = 48,
    progress: bool = False,
) -> list[str]:
    """The model's greedy output text for each record's media and prompt."""
    device = next(model.parameters()).device
    media_processor = MediaProcessor(model.config.image, model.config.audio)
    outputs: list[str] = []
    starts = range(0, len(records), batch_size)
    for start in tqdm(starts, desc="predict", disable=not progress, unit="batch"):
        chunk = records[start : start + batch_size]
        token_ids, mask = left_pad(
            [tokenizer.prompt_ids(r.prompt) for r in chunk], tokenizer.pad_id
        )
        media = media_processor([r.images for r in chunk], [r.audio for r in chunk])
        with autocast_for(device):
            context = model.prepare_media(media.to(device))
        new = generate_ids(
            model,
            token_ids.to(device),
            mask.to(device),
            context,
            SamplingConfig(max_new_tokens=max_new_tokens),
            eos_id=tokenizer.eos_id,
            pad_id=tokenizer.pad_id,
            suppress_ids=tokenizer.never_generated,
        )
        outputs.extend(tokenizer.decode(row).strip() for row in new.tolist())
    return outputs
