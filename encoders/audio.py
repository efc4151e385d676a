"""Audio encoder: a ViT over log-mel spectrogram patches (AST, Gong et al., 2021).

The spectrogram is cut into ``(patch_freq, patch_time)`` patches; tokens are ordered in time
(all frequency patches of the first time step, then the next), so a clip's tokens are
chronological. Position embeddings are factorised into a frequency and a time table; slicing
the time table (rather than interpolating it) gives every patch the same embedding whatever the
clip length, so a clip encodes identically alone or padded in a batch. Padding patches are
masked out of self-attention and reported in the returned mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from encoders.spectrogram import LogMelSpectrogram


@dataclass(frozen=True)
class AudioEncoderConfig:
    """Which audio encoder, its size and the features it reads.

    ``kind="vit"``: the spectrogram ViT below (``patch_freq``/``patch_time`` patches).
    ``kind="whisper"``: Whisper's encoder (``encoders.whisper``), ``n_positions`` output tokens
    for its fixed window of ``2 * n_positions * hop_length`` samples (30 s for 1500).
    ``window_positions`` (Whisper only) encodes a shorter fixed window with the first that many
    positions (250: 5 s, six times less compute per clip; as whisper.cpp's ``audio_ctx``): the
    features then differ from Whisper's own, which a model trained on them does not mind.
    """

    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 32
    patch_freq: int = 32
    patch_time: int = 4
    dim: int = 192
    n_layers: int = 4
    n_heads: int = 3
    mlp_ratio: float = 4.0
    max_seconds: float = 30.0
    kind: str = "vit"
    n_positions: int = 1500
    window_positions: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("vit", "whisper"):
            raise ValueError(f"audio encoder kind must be 'vit' or 'whisper', got {self.kind!r}")
        if self.window_positions is not None and not 0 < self.window_positions <= self.n_positions:
            raise ValueError(
                f"window_positions must be in 1..{self.n_positions}, got {self.window_positions}"
            )
        if self.kind == "whisper" and self.max_seconds * self.sample_rate > self.window_samples:
            raise ValueError(
                f"max_seconds {self.max_seconds:g} exceeds the Whisper window of "
                f"{self.window_samples / self.sample_rate:g} s"
            )

    @property
    def window_samples(self) -> int:
        """Whisper only: every clip is zero-padded to this many samples."""
        return 2 * self.window_tokens * self.hop_length

    @property
    def window_tokens(self) -> int:
        """Whisper only: tokens of the encoded window."""
        return self.window_positions or self.n_positions

    @property
    def max_time_patches(self) -> int:
        max_frames = int(self.max_seconds * self.sample_rate - self.n_fft) // self.hop_length + 1
        return math.ceil(max_frames / self.patch_time)

    def n_tokens(self, n_samples: int) -> int:
        """Tokens for a clip of ``n_samples`` samples (real ones, not counting padding)."""
        if self.kind == "whisper":  # frames that start inside the clip, two per token
            frames = math.ceil(n_samples / self.hop_length)
            return max(1, min(math.ceil(frames / 2), self.window_tokens))
        frames = max(1, (n_samples - self.n_fft) // self.hop_length + 1)
        return math.ceil(frames / self.patch_time) * (self.n_mels // self.patch_freq)


class AudioEncoder(nn.Module):
    """waveform ``(B, S)`` + lengths ``(B,)`` -> tokens ``(B, N, D)`` + mask ``(B, N)``."""

    def __init__(self, config: AudioEncoderConfig):
        super().__init__()
        if config.kind != "vit":
            raise ValueError(f"AudioEncoder is the 'vit' kind; got a {config.kind!r} config")
        if config.n_mels % config.patch_freq:
            raise ValueError(
                f"n_mels ({config.n_mels}) must be a multiple of patch_freq ({config.patch_freq})"
            )
        self.config = config
        self.dim = config.dim
        self.spectrogram = LogMelSpectrogram(
            config.sample_rate, config.n_fft, config.hop_length, config.n_mels
        )
        patch = (config.patch_freq, config.patch_time)
        self.patch_embed = nn.Conv2d(1, config.dim, kernel_size=patch, stride=patch)
        self.freq_embed = nn.Parameter(torch.zeros(config.n_mels // config.patch_freq, config.dim))
        self.time_embed = nn.Parameter(torch.zeros(config.max_time_patches, config.dim))
        nn.init.trunc_normal_(self.freq_embed, std=0.02)
        nn.init.trunc_normal_(self.time_embed, std=0.02)
        self.blocks = nn.ModuleList(
            Block(config.dim, config.n_heads, mlp_ratio=config.mlp_ratio, qkv_bias=True)
            for _ in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(config.dim, eps=1e-6)

    def forward(
        self, waveform: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        mel, frames = self.spectrogram(waveform, lengths)  # (B, M, F), (B,)
        pad = -mel.shape[-1] % cfg.patch_time
        mel = F.pad(mel, (0, pad))
        x = self.patch_embed(mel[:, None])  # (B, D, Fp, Tp)
        n_freq, n_time = x.shape[2], x.shape[3]
        if n_time > cfg.max_time_patches:
            raise ValueError(
                f"audio of {n_time} time patches exceeds the encoder's limit of "
                f"{cfg.max_time_patches} ({cfg.max_seconds:g} s)"
            )
        x = x.permute(0, 3, 2, 1)  # (B, Tp, Fp, D): time-major
        x = x + self.time_embed[:n_time, None, :] + self.freq_embed[None, :n_freq, :]
        x = x.reshape(x.shape[0], n_time * n_freq, cfg.dim)  # (B, N, D)
        time_valid = (
            torch.arange(n_time, device=x.device)[None, :]
            < torch.div(frames + cfg.patch_time - 1, cfg.patch_time, rounding_mode="floor")[:, None]
        )  # (B, Tp)
        mask = time_valid[:, :, None].expand(-1, -1, n_freq).reshape(x.shape[0], -1)  # (B, N)
        attn_mask = mask[:, None, None, :]  # keys only: (B, 1, 1, N)
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        return self.norm(x), mask
