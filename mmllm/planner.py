"""Plan a request before running it: media tokens, memory, and limits checked up front.

Sizes come from file headers (image dimensions, audio frames and rate) without decoding, so a
decompression bomb or an hours-long recording is refused before it costs memory or time.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from mmllm.config import MMConfig
from mmllm.errors import AudioError, ImageError, MediaLimitError
from mmllm.processing import MAX_AUDIO_SECONDS, MAX_IMAGE_PIXELS, audio_limit, describe


@dataclass(frozen=True)
class RequestPlan:
    """What one request (one sample) will cost."""

    image_tokens: int
    audio_tokens: int
    prompt_tokens: int
    max_new_tokens: int
    kv_cache_bytes: int  # self-attention cache over prompt + new tokens
    media_kv_bytes: int  # cross-attention K/V of the media, computed once
    weights_bytes: int

    @property
    def media_tokens(self) -> int:
        return self.image_tokens + self.audio_tokens

    @property
    def total_bytes(self) -> int:
        return self.kv_cache_bytes + self.media_kv_bytes + self.weights_bytes


def image_size(source: Any) -> tuple[int, int]:
    """(width, height) from the header (or the array/tensor shape), without decoding pixels."""
    if isinstance(source, Image.Image):
        return source.size
    if isinstance(source, np.ndarray):
        return source.shape[1], source.shape[0]
    if isinstance(source, torch.Tensor):
        return (source.shape[-1], source.shape[-2])
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with Image.open(stream) as image:
            return image.size
    except Image.DecompressionBombError as err:
        raise MediaLimitError(
            f"image {describe(source)} is over the limit of {MAX_IMAGE_PIXELS} pixels "
            "(a decompression bomb)"
        ) from err
    except Exception as err:  # any header failure is this input's fault
        raise ImageError(f"cannot read image header of {describe(source)}: {err}") from err


def audio_seconds(source: Any, sample_rate: int) -> float:
    """Duration from the header (or the array length at ``sample_rate``), without decoding."""
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return max(source.shape) / sample_rate if source.ndim else 0.0
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        return float(sf.info(stream).duration)
    except Exception as err:
        raise AudioError(f"cannot read audio header of {describe(source)}: {err}") from err


def plan_request(
    config: MMConfig,
    images: list[Any],
    audio: list[Any],
    *,
    prompt_tokens: int = 0,
    max_new_tokens: int = 0,
    n_parameters: int = 0,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_seconds: float = MAX_AUDIO_SECONDS,
    truncate: bool = False,
) -> RequestPlan:
    """The plan for one sample; raises ``MediaLimitError`` (or a decode error) before any work.
    With only the media given, it checks the media limits (the text and memory figures are 0).
    ``truncate``: clips longer than the encoder's window will be cut to it (see
    ``AudioProcessor``); only clips over ``max_seconds`` are refused."""
    if len(images) + len(audio) > config.max_media_items:
        raise MediaLimitError(
            f"{len(images)} images + {len(audio)} clips exceed the model's limit of "
            f"{config.max_media_items} media items per request"
        )
    if images and config.image is None:
        raise MediaLimitError("this model takes no images")
    if audio and config.audio is None:
        raise MediaLimitError("this model takes no audio")
    per_image = _tokens_per_item(config, config.image.n_tokens if config.image else 0)
    for source in images:
        w, h = image_size(source)
        if w * h > max_pixels:
            raise MediaLimitError(
                f"image {describe(source)} has {w}x{h} pixels, over the limit of {max_pixels}"
            )
    audio_tokens = 0
    for source in audio:
        seconds = audio_seconds(source, config.audio.sample_rate)
        window = config.audio.max_seconds
        limit = audio_limit(window, max_seconds, truncate)
        if seconds > limit:
            raise MediaLimitError(
                f"audio {describe(source)} is {seconds:.1f} s long, over the limit of {limit:g} s"
            )
        seconds = min(seconds, window)
        samples = max(config.audio.n_fft, math.ceil(seconds * config.audio.sample_rate))
        audio_tokens += _tokens_per_item(config, config.audio.n_tokens(samples))
    dec = config.decoder
    total = prompt_tokens + max_new_tokens
    if total > dec.max_seq_len:
        raise MediaLimitError(
            f"prompt of {prompt_tokens} tokens + {max_new_tokens} new tokens exceeds the "
            f"model's context of {dec.max_seq_len} tokens"
        )
    per_position = 2 * dec.n_kv_heads * dec.attn_head_dim * 4  # K and V, fp32
    n_cross = sum(dec.has_cross_attn(i) for i in range(dec.n_layers))
    media_tokens = per_image * len(images) + audio_tokens
    return RequestPlan(
        image_tokens=per_image * len(images),
        audio_tokens=audio_tokens,
        prompt_tokens=prompt_tokens,
        max_new_tokens=max_new_tokens,
        kv_cache_bytes=dec.n_layers * total * per_position,
        media_kv_bytes=n_cross * media_tokens * per_position,
        weights_bytes=4 * n_parameters,
    )


def _tokens_per_item(config: MMConfig, encoder_tokens: int) -> int:
    """Tokens an item adds to the media: the resampler's latents, or one per encoder token."""
    return config.projector.n_latents if config.projector.kind == "resampler" else encoder_tokens


__all__ = ["RequestPlan", "audio_seconds", "image_size", "plan_request"]
