"""Whisper's audio encoder (Radford et al., 2022): log-mel -> two convolutions -> transformer.

The architecture of OpenAI's release: conv (kernel 3) + GELU, conv (kernel 3, stride 2) + GELU,
fixed sinusoidal positions, pre-LayerNorm blocks (self-attention whose key projection has no
bias, GELU MLP) and a final LayerNorm. Parameter names follow Hugging Face's ``WhisperEncoder``,
so its weights map in by a plain key table (``encoders.pretrained``).

Variable-length clips: Whisper only ever saw full 30 s windows, and its encoder attends over the
whole window, so every clip is zero-padded to the window and encoded whole, exactly as Whisper
does: each clip's features equal transformers' for that clip. The mask then keeps the tokens
whose frames start inside the clip (two frames per token) and the batch is trimmed to its
longest clip, so the padding never reaches the language model. Each clip has its own window, so
a clip encodes identically alone or in a batch; the price is a full window of compute per clip.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from encoders.audio import AudioEncoderConfig
from encoders.spectrogram import WhisperLogMel


def sinusoids(length: int, dim: int) -> torch.Tensor:
    """Whisper's fixed positions ``(length, dim)``: sines then cosines, timescales 1 to 10^4."""
    rates = torch.exp(-math.log(10000) / (dim // 2 - 1) * torch.arange(dim // 2))
    angles = torch.arange(length)[:, None] * rates[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class WhisperAttention(nn.Module):
    """Bidirectional multi-head self-attention; the key projection has no bias."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q, k, v = (
            proj(x).view(B, N, self.n_heads, D // self.n_heads).transpose(1, 2)  # (B, H, N, hd)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(B, N, D))


class WhisperLayer(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))``, then ``x + fc2(gelu(fc1(norm(x))))``."""

    def __init__(self, dim: int, n_heads: int, hidden_dim: int):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.self_attn = WhisperAttention(dim, n_heads)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class WhisperEncoder(nn.Module):
    """waveform ``(B, S)`` + lengths ``(B,)`` -> tokens ``(B, N, D)`` + mask ``(B, N)``."""

    def __init__(self, config: AudioEncoderConfig):
        super().__init__()
        if config.kind != "whisper":
            raise ValueError(f"WhisperEncoder needs a 'whisper' config; got {config.kind!r}")
        self.config = config
        self.dim = config.dim
        self.spectrogram = WhisperLogMel(
            config.sample_rate,
            config.n_fft,
            config.hop_length,
            config.n_mels,
            config.window_samples,
        )
        self.conv1 = nn.Conv1d(config.n_mels, config.dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(config.dim, config.dim, kernel_size=3, stride=2, padding=1)
        # fixed, not trained (as in Whisper); stored with the weights
        self.register_buffer("embed_positions", sinusoids(config.n_positions, config.dim))
        hidden = round(config.dim * config.mlp_ratio)
        self.layers = nn.ModuleList(
            WhisperLayer(config.dim, config.n_heads, hidden) for _ in range(config.n_layers)
        )
        self.layer_norm = nn.LayerNorm(config.dim)

    def forward_features(self, mel: torch.Tensor) -> torch.Tensor:
        """mel ``(B, n_mels, 2 * P)`` -> every position's features ``(B, P, D)``; ``P`` is the
        window's tokens (``n_positions``, or fewer: ``window_positions``)."""
        x = F.gelu(self.conv1(mel.to(self.conv1.weight.dtype)))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, P, D)
        x = x + self.embed_positions[: x.shape[1]].to(x.dtype)
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x)

    def forward(
        self, waveform: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mel, frames = self.spectrogram(waveform, lengths)  # (B, M, 2P), (B,)
        tokens = self.forward_features(mel)  # (B, P, D)
        real = torch.div(frames + 1, 2, rounding_mode="floor")  # (B,) tokens per clip
        keep = int(real.max())
        mask = torch.arange(keep, device=tokens.device)[None, :] < real[:, None]  # (B, N)
        return tokens[:, :keep], mask
