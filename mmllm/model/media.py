"""Media of a batch, and how the items of each sample become one token sequence.

A batch may hold any mix per sample: no media, one image, several images, audio, or both.
``MediaBatch`` stores all images of the batch in one tensor (and all clips in another) with the
row each item belongs to, so each encoder runs once over every item. ``MediaPacker`` then
gathers each sample's items (images first, then clips, in order), adds a modality embedding and
a slot embedding (which item it is), and pads the samples to a common length with a mask.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from mmllm.errors import MediaLimitError

IMAGE, AUDIO = 0, 1


@dataclass(frozen=True)
class TiledPixels:
    """A picture for a tiled vision tower (``encoders.hf_vision``): its tiles ``(T, 3, S, S)``
    (padded with empty tiles) and the id of the aspect ratio they were laid out in."""

    tiles: torch.Tensor
    aspect_ratio_id: int


@dataclass
class MediaBatch:
    """pixels ``(N_img, 3, H, W)`` with image_index ``(N_img,)`` (the sample of each image);
    waveform ``(N_aud, S)`` with audio_lengths ``(N_aud,)`` and audio_index ``(N_aud,)``;
    recognitions ``(N_img, K, 6)`` with recognition_mask ``(N_img, K)``: what the recognizers
    found in each image (``encoders.recognizers``), for a model that reads them. For a tiled
    tower, pixels are tiles ``(N_img, T, 3, S, S)`` with aspect_ratio_ids ``(N_img,)``."""

    batch_size: int
    pixels: torch.Tensor | None = None
    image_index: torch.Tensor | None = None
    waveform: torch.Tensor | None = None
    audio_lengths: torch.Tensor | None = None
    audio_index: torch.Tensor | None = None
    recognitions: torch.Tensor | None = None
    recognition_mask: torch.Tensor | None = None
    aspect_ratio_ids: torch.Tensor | None = None

    @classmethod
    def from_lists(
        cls,
        images: list[list[torch.Tensor | TiledPixels]] | None = None,
        audio: list[list[torch.Tensor]] | None = None,
        recognitions: list[list[torch.Tensor]] | None = None,
    ) -> MediaBatch:
        """Collate per-sample lists: ``images[b]`` of ``(3, H, W)`` (or all ``TiledPixels``),
        ``audio[b]`` of ``(S,)``, ``recognitions[b]`` of ``(K_i, 6)``, one per image (padded to
        the longest, masked)."""
        rows = images if images is not None else audio
        if rows is None:
            raise ValueError("from_lists needs images or audio (use None for a text-only batch)")
        batch = cls(batch_size=len(rows))
        if images is not None:
            flat = [(b, x) for b, items in enumerate(images) for x in items]
            if flat and isinstance(flat[0][1], TiledPixels):
                batch.pixels = torch.stack([x.tiles for _, x in flat])
                batch.aspect_ratio_ids = torch.tensor([x.aspect_ratio_id for _, x in flat])
            elif flat:
                batch.pixels = torch.stack([x for _, x in flat])
            if flat:
                batch.image_index = torch.tensor([b for b, _ in flat])
            if recognitions is not None and flat:
                rows = [r for items in recognitions for r in items]
                if len(rows) != len(flat):
                    raise ValueError(f"{len(rows)} recognitions for {len(flat)} images")
                longest = max(1, max(r.shape[0] for r in rows))
                batch.recognitions = torch.stack(
                    [F.pad(r, (0, 0, 0, longest - r.shape[0])) for r in rows]
                )
                batch.recognition_mask = (
                    torch.arange(longest)[None, :]
                    < torch.tensor([r.shape[0] for r in rows])[:, None]
                )
        if audio is not None:
            if len(audio) != batch.batch_size:
                raise ValueError(
                    f"images and audio differ in batch size: {len(rows)} vs {len(audio)}"
                )
            flat = [(b, x) for b, items in enumerate(audio) for x in items]
            if flat:
                longest = max(x.shape[-1] for _, x in flat)
                batch.waveform = torch.stack(
                    [F.pad(x, (0, longest - x.shape[-1])) for _, x in flat]
                )
                batch.audio_lengths = torch.tensor([x.shape[-1] for _, x in flat])
                batch.audio_index = torch.tensor([b for b, _ in flat])
        return batch

    @property
    def is_empty(self) -> bool:
        return self.pixels is None and self.waveform is None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> MediaBatch:
        def move(x: torch.Tensor | None, floating: bool) -> torch.Tensor | None:
            if x is None:
                return None
            return x.to(device=device, dtype=dtype if floating and dtype else x.dtype)

        return replace(
            self,
            pixels=move(self.pixels, True),
            image_index=move(self.image_index, False),
            waveform=move(self.waveform, True),
            audio_lengths=move(self.audio_lengths, False),
            audio_index=move(self.audio_index, False),
            recognitions=move(self.recognitions, True),
            recognition_mask=move(self.recognition_mask, False),
            aspect_ratio_ids=move(self.aspect_ratio_ids, False),
        )


class MediaPacker(nn.Module):
    """Per-item tokens -> per-sample media ``(B, N_media, D)`` and mask ``(B, N_media)``."""

    def __init__(
        self,
        dim: int,
        max_items: int,
        image_tokens: int = 0,
        null_tokens: int = 0,
        fixed_image_positions: torch.Tensor | None = None,
        embeddings: bool = True,
    ):
        """``embeddings``: add a learned modality and slot embedding to each item's tokens."""
        super().__init__()
        self.max_items, self.dim = max_items, dim
        self.modality_embed = nn.Embedding(2, dim) if embeddings else None
        self.slot_embed = nn.Embedding(max_items, dim) if embeddings else None
        if embeddings:
            nn.init.normal_(self.modality_embed.weight, std=0.02)
            nn.init.normal_(self.slot_embed.weight, std=0.02)
        # (N_img, D): where each image token sits (ProjectorConfig.image_positions)
        self.image_positions = (
            nn.Parameter(torch.randn(image_tokens, dim) * 0.02) if image_tokens else None
        )
        # (N_img, D) or None: a fixed table (ProjectorConfig.fixed_image_positions), rebuilt
        # from the config, never saved
        self.register_buffer("fixed_image_positions", fixed_image_positions, persistent=False)
        # (N_null, D): always-present tokens to attend to when nothing matches
        self.null_tokens = (
            nn.Parameter(torch.randn(null_tokens, dim) * 0.02) if null_tokens else None
        )

    def forward(
        self,
        pieces: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]],
        batch_size: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """pieces: ``(modality, tokens (n, N, D), mask (n, N), sample_index (n,))`` per modality."""
        rows: list[list[tuple[int, torch.Tensor]]] = [[] for _ in range(batch_size)]
        for modality, tokens, mask, index in pieces:
            if modality == IMAGE:
                for table in (self.image_positions, self.fixed_image_positions):
                    if table is None:
                        continue
                    n = table.shape[0]  # the image's cells come first, recognition tokens after
                    if tokens.shape[1] < n:
                        raise ValueError(
                            f"{tokens.shape[1]} image tokens per item, but the model has "
                            f"{n} image positions"
                        )
                    if tokens.shape[1] == n:
                        tokens = tokens + table
                    else:
                        tokens = torch.cat([tokens[:, :n] + table, tokens[:, n:]], 1)
            for item, b in enumerate(index.tolist()):
                rows[b].append((modality, tokens[item][mask[item]]))  # real tokens only
        dim, ref = self.dim, pieces[0][1]
        sequences = []
        for b, items in enumerate(rows):
            if len(items) > self.max_items:
                raise MediaLimitError(
                    f"sample {b} has {len(items)} media items; the model takes at most "
                    f"{self.max_items}"
                )
            seq = [t for _, t in items]
            if self.modality_embed is not None:
                seq = [
                    t + self.modality_embed.weight[m] + self.slot_embed.weight[slot]
                    for slot, (m, t) in enumerate(items)
                ]
            if seq and self.null_tokens is not None:
                seq.append(self.null_tokens)
            sequences.append(torch.cat(seq) if seq else ref.new_zeros(0, dim))
        # padded and stacked, not written row by row into a zero tensor: under autograd each
        # such in-place write clones the whole (B, N, D) gradient in the backward pass (B
        # copies a step: 3-7% of a tiny-model training step on CPU, in a same-process A/B)
        lengths = torch.tensor([s.shape[0] for s in sequences], device=ref.device)
        longest = int(lengths.max())
        padded = [F.pad(s.to(ref.dtype), (0, 0, 0, longest - len(s))) for s in sequences]
        media = torch.stack(padded)  # (B, N_media, D)
        mask = torch.arange(longest, device=ref.device)[None, :] < lengths[:, None]
        return media, mask
