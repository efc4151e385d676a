"""Projectors: encoder tokens ``(B_items, N, D_enc)`` -> shared-space tokens ``(B_items, N', D)``.

``MLPProjector`` maps each token (LLaVA-1.5's two-layer MLP, Liu et al., 2023).
``Resampler`` compresses each item to K learned latents that cross-attend to its tokens
(Flamingo's Perceiver Resampler, Alayrac et al., 2022): a fixed media cost per image or clip.
``LinearProjector`` and ``nn.Identity``-like ``IdentityProjector``: what imported
encoder-decoder models have between their encoder and decoder (e.g. VisionEncoderDecoder's
``enc_to_dec_proj``, or nothing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmllm.config import ProjectorConfig
from mmllm.errors import ConfigError


class MLPProjector(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc2(F.gelu(self.fc1(self.norm(tokens)))), mask


class LinearProjector(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.proj(tokens), mask


class IdentityProjector(nn.Module):
    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return tokens, mask


class ResamplerLayer(nn.Module):
    """Latents attend to [tokens; latents], then a feed-forward; both pre-norm residual."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.norm_latents = nn.LayerNorm(dim)
        self.norm_tokens = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, n_heads, batch_first=True)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(
        self, latents: torch.Tensor, tokens: torch.Tensor, pad: torch.Tensor
    ) -> torch.Tensor:
        q = self.norm_latents(latents)
        kv = torch.cat([self.norm_tokens(tokens), q], dim=1)
        latents = latents + self.attn(q, kv, kv, key_padding_mask=pad, need_weights=False)[0]
        return latents + self.ff(self.norm_ff(latents))


class Resampler(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, n_latents: int, n_layers: int, n_heads: int):
        super().__init__()
        self.in_proj = nn.Linear(in_dim, out_dim)
        self.latents = nn.Parameter(torch.randn(n_latents, out_dim) * 0.02)
        self.layers = nn.ModuleList(ResamplerLayer(out_dim, n_heads) for _ in range(n_layers))
        self.norm = nn.LayerNorm(out_dim)

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B = tokens.shape[0]
        tokens = self.in_proj(tokens)
        latents = self.latents.expand(B, -1, -1)
        # key padding: True = ignore; the latents themselves are always attendable
        pad = torch.cat(
            [~mask, torch.zeros(B, latents.shape[1], dtype=torch.bool, device=mask.device)], dim=1
        )
        for layer in self.layers:
            latents = layer(latents, tokens, pad)
        out = self.norm(latents)
        return out, torch.ones(out.shape[:2], dtype=torch.bool, device=out.device)


def build_projector(config: ProjectorConfig, in_dim: int, out_dim: int) -> nn.Module:
    """The projector ``config`` names, mapping ``in_dim`` encoder tokens to ``out_dim``."""
    if config.kind == "resampler":
        return Resampler(in_dim, out_dim, config.n_latents, config.n_layers, config.n_heads)
    if config.kind == "linear":
        return LinearProjector(in_dim, out_dim)
    if config.kind == "identity":
        if in_dim != out_dim:
            raise ConfigError(
                f"the identity projector needs the encoder's width ({in_dim}) to equal the "
                f"decoder's ({out_dim})"
            )
        return IdentityProjector()
    return MLPProjector(in_dim, out_dim)
