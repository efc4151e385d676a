"""``MultimodalLM``: encoders -> projectors -> media packing -> decoder. It wires; parts compute."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from encoders import build_audio_encoder, build_image_encoder
from encoders.image import sincos_grid
from mmllm.config import MMConfig
from mmllm.errors import InputError
from mmllm.model.cache import KVCache, MediaContext
from mmllm.model.decoder import Decoder
from mmllm.model.lora import add_lora
from mmllm.model.media import AUDIO, IMAGE, MediaBatch, MediaPacker
from mmllm.model.projector import build_projector
from mmllm.model.recognition import RecognitionTokens

if TYPE_CHECKING:
    from mmllm.compiled import CompiledModel


class MultimodalLM(nn.Module):
    def __init__(self, config: MMConfig):
        super().__init__()
        self.config = config
        dim = config.decoder.media_dim or config.decoder.dim  # what cross-attention reads
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
            config.projector.media_embeddings,
        )
        # what the real recognizers found in each image, as tokens after its cells
        self.recognition = (
            RecognitionTokens(dim) if config.recognizer and self.image_encoder else None
        )
        # BLIP's VQA: a text encoder reads the question with the media, the decoder its states
        self.question_encoder = (
            Decoder(config.question_encoder) if config.question_encoder is not None else None
        )
        self.decoder = Decoder(config.decoder)
        if config.lora is not None:
            add_lora(self.decoder, config.lora)

    def encode_media(
        self, media: MediaBatch, compiled: CompiledModel | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All items of the batch -> media ``(B, N_media, D)`` and mask ``(B, N_media)``;
        images through ``compiled.images`` when given (``mmllm.compiled``; inference only)."""
        return self.media_packer(self.media_pieces(media, compiled), media.batch_size)

    def media_pieces(
        self, media: MediaBatch, compiled: CompiledModel | None = None
    ) -> list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Each modality's items, before packing: ``(kind, tokens (n, N, D), mask (n, N),
        sample index (n,))``; an image's tokens are its projected cells (in grid order), then
        its recognition tokens."""
        pieces = []
        if media.pixels is not None:
            if self.image_encoder is None:
                raise InputError("this model has no image encoder; it cannot take images")
            if compiled is not None and compiled.images is not None:
                tokens, mask = compiled.images(media.pixels)
            else:
                tiled = () if media.aspect_ratio_ids is None else (media.aspect_ratio_ids,)
                tokens, mask = self.image_projector(*self.image_encoder(media.pixels, *tiled))
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
        return pieces

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
        if self.question_encoder is not None:
            raise InputError(
                "this model answers questions: its decoder reads a question's states "
                "(question_context), not the media"
            )
        return self.with_word_bias(self.decoder.prepare_media(tokens, mask), media)

    def question_context(
        self,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        question_ids: torch.Tensor,
        question_mask: torch.Tensor | None = None,
    ) -> MediaContext:
        """For a model with a question encoder: encoded media (``encode_media``'s tokens
        ``(B, N, D)`` and mask ``(B, N)``) and a question ``(B, Tq)`` (its mask ``(B, Tq)``:
        False on padding) -> the decoder's cross-attention K/V over the question's states."""
        if self.question_encoder is None:
            raise InputError("this model reads no question beside its media")
        seen = self.question_encoder.prepare_media(tokens, mask)
        states = self.question_encoder.hidden(question_ids, seen, question_mask)  # (B, Tq, D)
        if question_mask is None:
            question_mask = torch.ones_like(question_ids, dtype=torch.bool)
        return self.decoder.prepare_media(states, question_mask.bool())

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
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """token_ids ``(B, T)`` with their media (raw, or already ``prepare_media``'d) ->
        logits ``(B, T, V)``. attention_mask ``(B, T_past + T)``: False on left padding; cache:
        filled in place (``Decoder.hidden``). Training losses: ``mmllm.train.loss``."""
        context = media if isinstance(media, MediaContext) else self.prepare_media(media)
        return self.decoder(token_ids, context, attention_mask, cache=cache)


def projected_positions(config: MMConfig) -> torch.Tensor | None:
    """The fixed 2-D sin-cos table ``(N_img, D)`` added to projected image tokens (row-major
    over the token grid), times ``config.projector.fixed_image_positions``; None when 0."""
    if config.image is None:
        return None
    grid = math.isqrt(config.image.n_tokens)
    return sincos_grid(grid, config.decoder.dim, config.projector.fixed_image_positions)
