"""Training records and how a list of them becomes one padded batch.

A ``Record`` is one sample of any source (synthetic world, JSONL file): media sources, a
prompt and the target text. Text layout: ``<bos> prompt <sep> target <eos>``; the loss is
taken on ``target <eos>`` only. Batches are right-padded (padding after the text never reaches
a real token under causal attention, so training needs no attention mask).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from mmllm.model.media import MediaBatch
from mmllm.processing import MediaProcessor
from mmllm.tokenizer import Tokenizer

IGNORE_INDEX = -100  # a label that takes no loss (prompt and padding)


@dataclass
class Record:
    prompt: str
    target: str
    images: list[Any] = field(default_factory=list)
    audio: list[Any] = field(default_factory=list)
    task: str = "vqa"
    category: str | None = None
    qtype: str | None = None
    source: str | None = None  # "file:line" for JSONL records, for error messages
    scenes: list[Any] = field(default_factory=list)  # each image's ground truth, when known
    # per scene: the groups of its shapes the question names (synthetic.question_referents)
    referents: list[tuple[tuple[int, ...], ...]] = field(default_factory=list)
    # per image: recognition rows (K, 6) already known (encoders.recognizers), or empty: run them
    recognitions: list[Any] = field(default_factory=list)
    # the acceptable answers or main nouns of a real-photo record (any one of them is right)
    accept: list[str] = field(default_factory=list)


@dataclass
class TrainBatch:
    token_ids: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T), IGNORE_INDEX on prompt and padding
    media: MediaBatch
    patch_targets: torch.Tensor | None = None  # (n_images, N, n_groups): Collator.image_targets

    def to(self, device: torch.device | str) -> TrainBatch:
        targets = None if self.patch_targets is None else self.patch_targets.to(device)
        return TrainBatch(
            self.token_ids.to(device), self.labels.to(device), self.media.to(device), targets
        )


class Collator:
    """list[Record] -> ``TrainBatch``, text truncated to ``max_len`` tokens.

    ``image_targets`` (optional): the scenes of a batch's images, in order (None where unknown),
    and the shapes each image's question names (``Record.referents``; ``()``: none) -> per-token
    targets ``(n_images, ...)``, for ``TrainBatch.patch_targets``.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        media_processor: MediaProcessor,
        max_len: int,
        image_targets: Callable[[list[Any], list[tuple]], torch.Tensor] | None = None,
    ):
        self.tokenizer = tokenizer
        self.media_processor = media_processor
        self.max_len = max_len
        self.image_targets = image_targets

    def encode(self, record: Record) -> tuple[list[int], list[int]]:
        prompt = self.tokenizer.prompt_ids(record.prompt)
        target = [*self.tokenizer.encode(record.target), self.tokenizer.eos_id]
        ids = (prompt + target)[: self.max_len]
        labels = ([IGNORE_INDEX] * len(prompt) + target)[: self.max_len]
        return ids, labels

    def __call__(self, records: list[Record]) -> TrainBatch:
        encoded = [self.encode(r) for r in records]
        longest = max(len(ids) for ids, _ in encoded)
        token_ids = torch.full((len(records), longest), self.tokenizer.pad_id, dtype=torch.long)
        labels = torch.full((len(records), longest), IGNORE_INDEX, dtype=torch.long)
        for row, (ids, lab) in enumerate(encoded):
            token_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(lab)] = torch.tensor(lab)
        targets = None
        if self.image_targets is not None:
            scenes, referents = [], []
            for r in records:
                if r.scenes and len(r.scenes) != len(r.images):
                    raise ValueError(f"{len(r.scenes)} scenes for {len(r.images)} images")
                scenes += r.scenes or [None] * len(r.images)
                referents += r.referents or [()] * len(r.images)
            targets = self.image_targets(scenes, referents)
        return TrainBatch(token_ids, labels, self.media(records), targets)

    def media(self, records: list[Record]) -> MediaBatch:
        """The records' images and clips, processed and collated."""
        known = [r.recognitions or [None] * len(r.images) for r in records]
        return self.media_processor([r.images for r in records], [r.audio for r in records], known)
