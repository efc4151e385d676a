"""``MultimodalLM``: encoders -> projectors -> media packing -> decoder. It wires; parts compute."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from encoders import build_audio_encoder, build_image_encoder
from encoders.image import sincos_grid
from mmllm.cache import KVCache, MediaContext
from mmllm.config import MMConfig
from mmllm.decoder import Decoder
from mmllm.errors import InputError
from mmllm.grouping import length_groups
from mmllm.lora import add_lora
from mmllm.media import AUDIO, IMAGE, MediaBatch, MediaPacker
from mmllm.projector import build_projector
from mmllm.recognition import RecognitionTokens

if TYPE_CHECKING:
    from mmllm.compiled import CompiledModel

IGNORE_INDEX = -100


@dataclass
class LMOutput:
    """logits ``(B, T, V)``; loss: mean next-token cross-entropy on labelled positions, or None."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None


class MultimodalLM(nn.Module):
    def __init__(self, config: MMConfig):
        super().__init__()
        self.config = config
        dim = config.decoder.dim
        self.image_encoder = build_image_encoder(config.image) if config.image else None
        self.audio_encoder = build_audio_encoder(config.audio) if config.audio else None
        self.image_projector = (
            build_projector(config.projector, self.image_encoder.dim, dim)
            if self.image_encoder
            else None
        )
        self.audio_projector = (
            build_projector(config.projector, self.audio_encoder.dim, dim)
            if self.audio_encoder
            else None
        )
        image_tokens = 0
        if config.projector.image_positions and self.image_encoder is not None:
            image_tokens = config.image.n_tokens
        self.media_packer = MediaPacker(
            dim,
            config.max_media_items,
            image_tokens,
            config.projector.null_tokens,
            projected_positions(config),
        )
        # what the real recognizers found in each image, as tokens after its cells
        self.recognition = (
            RecognitionTokens(dim) if config.recognizer and self.image_encoder else None
        )
        self.decoder = Decoder(config.decoder)
        if config.lora is not None:
            add_lora(self.decoder, config.lora)

    def encode_media(
        self, media: MediaBatch, compiled: CompiledModel | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All items of the batch -> media ``(B, N_media, D)`` and mask ``(B, N_media)``;
        images through ``compiled.images`` when given (``mmllm.compiled``; inference only)."""
        pieces = []
        if media.pixels is not None:
            if self.image_encoder is None:
                raise InputError("this model has no image encoder; it cannot take images")
            if compiled is not None and compiled.images is not None:
                tokens, mask = compiled.images(media.pixels)
            else:
                tokens, mask = self.image_projector(*self.image_encoder(media.pixels))
            if self.recognition is not None:
                if media.recognitions is None:
                    raise InputError("this model reads recognitions; the media batch has none")
                found = self.recognition(media.recognitions.to(tokens.dtype))  # (n, K, D)
                tokens = torch.cat([tokens, found], 1)
                mask = torch.cat([mask, media.recognition_mask], 1)
            pieces.append((IMAGE, tokens, mask, media.image_index))
        if media.waveform is not None:
            if self.audio_encoder is None:
                raise InputError("this model has no audio encoder; it cannot take audio")
            tokens, mask = self.audio_projector(
                *self.audio_encoder(media.waveform, media.audio_lengths)
            )
            pieces.append((AUDIO, tokens, mask, media.audio_index))
        return self.media_packer(pieces, media.batch_size)

    def prepare_media(
        self, media: MediaBatch | None, compiled: CompiledModel | None = None
    ) -> MediaContext | None:
        """Encode media and compute every cross-attention layer's K/V: once per request."""
        if media is None or media.is_empty:
            return None
        return self.context_for(*self.encode_media(media, compiled), media)

    def context_for(
        self, tokens: torch.Tensor, mask: torch.Tensor, media: MediaBatch
    ) -> MediaContext:
        """Encoded media (``encode_media``'s tokens and mask) -> every cross-attention layer's
        K/V, with the recognized labels' word bias."""
        return self.with_word_bias(self.decoder.prepare_media(tokens, mask), media)

    def with_word_bias(
        self, context: MediaContext, media: MediaBatch, bias: torch.Tensor | None = None
    ) -> MediaContext:
        """``context`` with the recognized labels' word bias ``(B, 3, V)`` of the whole batch
        (``RecognitionTokens.word_bias``; computed here unless given), cut to the context's
        rows; ``context`` itself for a model that reads no recognitions."""
        if self.recognition is None or media.recognitions is None:
            return context
        if bias is None:
            bias = self.recognition.word_bias(
                media.recognitions,
                media.recognition_mask,
                media.image_index,
                media.batch_size,
                self.config.decoder.vocab_size,
            )
        if context.rows is not None:
            bias = bias[context.rows]
        return dataclasses.replace(
            context,
            word_bias=bias,
            word_gate=self.recognition.copy_gate,
            word_joins=self.recognition.word_joins,
        )

    def forward(
        self,
        token_ids: torch.Tensor,
        media: MediaBatch | MediaContext | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache: KVCache | None = None,
        labelled_logits_only: bool = False,
        loss_per_example: bool = False,
        length_groups: int = 1,
    ) -> LMOutput:
        """token_ids ``(B, T)``; labels ``(B, T)`` aligned with token_ids (shifted inside),
        ``IGNORE_INDEX`` where no loss is taken. ``labelled_logits_only`` (training): logits
        ``(N, V)`` only at the N positions that predict a label, sparing the LM head's cost on
        prompts and padding; the loss is the same. ``loss_per_example`` (with it): each sample's
        labelled tokens weigh 1/their count, so a one-word answer counts as much as a caption.
        ``length_groups`` (with it, for right-padded batches of ``MediaBatch``): the decoder
        runs on up to this many groups of rows of similar length, each cut to its longest
        labelled row (and its media to its longest), so it computes little padding; the loss
        and gradients are the same up to rounding (``mmllm.grouping``)."""
        if labelled_logits_only and labels is not None:
            grouped = length_groups > 1 and attention_mask is None and cache is None
            parts = []  # (logits (N, V), targets (N,), weights (N,)) per group of rows
            if grouped and not isinstance(media, MediaContext):
                parts = self._grouped_logits(token_ids, media, labels, length_groups)
            if not parts:  # one group (or no row has a label)
                context = media if isinstance(media, MediaContext) else self.prepare_media(media)
                hidden = self.decoder.hidden(token_ids, context, attention_mask, cache=cache)
                parts = [self._labelled_logits(hidden, token_ids, labels, context)]
            logits, targets, weights = (torch.cat(t) for t in zip(*parts, strict=True))
            if not loss_per_example:
                return LMOutput(logits=logits, loss=F.cross_entropy(logits.float(), targets))
            per_token = F.cross_entropy(logits.float(), targets, reduction="none")  # (N,)
            examples = (labels[:, 1:] != IGNORE_INDEX).any(1).sum().clamp(min=1)
            return LMOutput(logits=logits, loss=(per_token * weights).sum() / examples)
        context = media if isinstance(media, MediaContext) else self.prepare_media(media)
        logits = self.decoder(token_ids, context, attention_mask, cache=cache)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(),
                labels[:, 1:].flatten(),
                ignore_index=IGNORE_INDEX,
            )
        return LMOutput(logits=logits, loss=loss)

    def _labelled_logits(
        self,
        hidden: torch.Tensor,
        token_ids: torch.Tensor,
        labels: torch.Tensor,
        context: MediaContext | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """hidden ``(B, T, D)`` of token_ids ``(B, T)``, labels ``(B, T)`` -> the logits
        ``(N, V)`` at the N positions that predict a label, those labels ``(N,)`` and each
        one's 1 / its row's label count."""
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX  # (B, T-1)
        states = hidden[:, :-1][keep]  # (N, D)
        logits = self.decoder.logits(states)  # (N, V)
        if context is not None:
            previous = token_ids[:, :-1][keep]  # (N,): the token each position reads last
            logits = context.adjust_logits(logits, states, previous, keep.nonzero()[:, 0])
        counts = keep.sum(1, keepdim=True)  # (B, 1)
        weights = (1.0 / counts.clamp(min=1)).expand_as(keep)[keep]  # (N,)
        return logits, targets[keep], weights

    def _grouped_logits(
        self, token_ids: torch.Tensor, media: MediaBatch | None, labels: torch.Tensor, groups: int
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``_labelled_logits`` of each length group of rows (see ``forward``); the media are
        encoded once for the whole batch, their cross-attention keys/values per group."""
        labelled = labels != IGNORE_INDEX
        positions = torch.arange(labels.shape[1], device=labels.device)
        # a row needs its tokens up to its last label (0: no label, no loss: the row is left out)
        lengths = torch.where(labelled, positions + 1, 0).amax(1)  # (B,)
        encoded = None if media is None or media.is_empty else self.encode_media(media)
        bias = None  # the whole batch's word bias, computed once for every group
        if encoded is not None and self.recognition is not None:
            bias = self.with_word_bias(MediaContext.of([], encoded[1]), media).word_bias
        parts = []
        for rows in length_groups(lengths, groups):
            n = int(lengths[rows].max())
            context = None
            if encoded is not None:
                tokens, mask = encoded[0][rows], encoded[1][rows]  # media are left-aligned
                n_media = max(1, int(mask.sum(1).max()))
                context = self.decoder.prepare_media(tokens[:, :n_media], mask[:, :n_media])
                context = self.with_word_bias(dataclasses.replace(context, rows=rows), media, bias)
            hidden = self.decoder.hidden(token_ids[rows, :n], context)
            parts.append(
                self._labelled_logits(hidden, token_ids[rows, :n], labels[rows, :n], context)
            )
        return parts


def projected_positions(config: MMConfig) -> torch.Tensor | None:
    """The fixed 2-D sin-cos table ``(N_img, D)`` added to projected image tokens (row-major
    over the token grid), times ``config.projector.fixed_image_positions``; None when 0."""
    if config.image is None:
        return None
    grid = math.isqrt(config.image.n_tokens)
    return sincos_grid(grid, config.decoder.dim, config.projector.fixed_image_positions)
