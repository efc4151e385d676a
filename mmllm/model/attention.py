"""Causal self-attention (grouped-query, RoPE, KV cache) and gated cross-attention to media.

Both use PyTorch's ``scaled_dot_product_attention`` so CPU and CUDA pick their fused kernels.
The cross-attention follows Flamingo (Alayrac et al., 2022): its output is scaled by
``tanh(gate)`` with the gate starting at 0 by default, so a fresh model is exactly its language
model. A model trained from scratch has no language model to protect and starts its gates open
(``gate_init``), fixed (``train_gates=False``): learnable gates from 0 never opened there.

``cross_attn_qk_norm`` RMS-normalises the cross-attention's queries and keys per head, each with
a learned gain (QK-norm: Dehghani et al., 2023; Wortsman et al., 2023), so that a logit is a
bounded, scaled cosine and the softmax cannot collapse to one hard choice (docs/architecture.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmllm.config import DecoderConfig
from mmllm.model.cache import KVCache, MediaContext
from mmllm.model.layers import RMSNorm, apply_rotary


def causal_mask(
    attention_mask: torch.Tensor | None, q_len: int, k_len: int, device: torch.device
) -> torch.Tensor | None:
    """Boolean mask ``(B, 1, T_q, T_k)`` for queries at the last ``q_len`` of ``k_len`` positions.

    ``attention_mask`` ``(B, T_k)`` is True for real tokens (False for left padding). Returns None
    when plain causal attention suffices. Each query may always see itself, so padding rows never
    produce NaN (their outputs are ignored).
    """
    if attention_mask is None and q_len == 1:
        return None
    q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    mask = (k_pos <= q_pos)[None, None]  # (1, 1, Tq, Tk)
    if attention_mask is not None:
        mask = mask & attention_mask[:, None, None, :].bool()
        mask = mask | (k_pos == q_pos)[None, None]
    return mask


def padding_mask(
    attention_mask: torch.Tensor | None, length: int, device: torch.device
) -> torch.Tensor:
    """Boolean mask ``(B|1, 1, 1, T)`` for attention in both directions: every query sees
    every real token (``attention_mask`` ``(B, T)``, True for real tokens; None: all are)."""
    if attention_mask is None:
        return torch.ones(1, 1, 1, length, dtype=torch.bool, device=device)
    return attention_mask[:, None, None, :].bool()


class SelfAttention(nn.Module):
    """Grouped-query causal self-attention, with rotary positions unless ``rope`` is None."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        hd = config.attn_head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, hd
        qkv_bias = config.attn_bias or config.linear_bias
        self.q_proj = nn.Linear(config.dim, config.n_heads * hd, bias=qkv_bias)
        self.k_proj = nn.Linear(config.dim, config.n_kv_heads * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(config.dim, config.n_kv_heads * hd, bias=qkv_bias)
        self.o_proj = nn.Linear(config.n_heads * hd, config.dim, bias=config.linear_bias)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if rope is None:  # positions were added to the embeddings (learned positions)
            q, k = q.transpose(1, 2), k.transpose(1, 2)
        else:  # queries and keys rotated in one go: (B, H + H_kv, T, hd)
            qk = apply_rotary(torch.cat([q, k], dim=2).transpose(1, 2), *rope)
            q, k = qk.split([self.n_heads, self.n_kv_heads], dim=1)  # (B, H|H_kv, T, hd)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, H_kv, T_past + T, hd)
        is_causal = mask is None and T > 1
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=self.n_kv_heads != self.n_heads
        )
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class GatedCrossAttention(nn.Module):
    """Text queries attend to the media of their own sample; output scaled by ``tanh(gate)``
    (not scaled where ``cross_attn_gated`` is off: ``gate`` is None)."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        hd = config.attn_head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, hd
        bias, media_dim = config.linear_bias, config.media_dim or config.dim
        self.q_proj = nn.Linear(config.dim, config.n_heads * hd, bias=bias)
        self.k_proj = nn.Linear(media_dim, config.n_kv_heads * hd, bias=bias)
        self.v_proj = nn.Linear(media_dim, config.n_kv_heads * hd, bias=bias)
        self.o_proj = nn.Linear(config.n_heads * hd, config.dim, bias=bias)
        self.q_norm = RMSNorm(hd, config.norm_eps) if config.cross_attn_qk_norm else None
        self.k_norm = RMSNorm(hd, config.norm_eps) if config.cross_attn_qk_norm else None
        gate = torch.full((1,), config.gate_init)
        if not config.cross_attn_gated:
            self.gate = None
        elif config.train_gates:
            self.gate = nn.Parameter(gate)
        else:
            self.register_buffer("gate", gate)

    def media_kv(self, media: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """media ``(B, N, D)`` -> keys, values ``(B, H_kv, N, hd)``; computed once per request."""
        B, N, _ = media.shape
        k = self.k_proj(media).view(B, N, self.n_kv_heads, self.head_dim)
        if self.k_norm is not None:
            k = self.k_norm(k)
        v = self.v_proj(media).view(B, N, self.n_kv_heads, self.head_dim).transpose(1, 2)
        return k.transpose(1, 2), v

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        """Text states ``(B, T, D)`` -> queries ``(B, H, T, hd)``."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        if self.q_norm is not None:
            q = self.q_norm(q)
        return q.transpose(1, 2)

    def attention_weights(
        self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], media: MediaContext
    ) -> torch.Tensor:
        """The softmax weights ``(B, H, T, N)`` that :meth:`forward` puts on the media tokens
        (computed explicitly, for inspection: ``scripts.probes.attention``)."""
        q = self.queries(x)
        keys = kv[0].repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
        logits = q @ keys.transpose(-1, -2) / self.head_dim**0.5
        return logits.masked_fill(~media.attn_mask, float("-inf")).softmax(-1)

    def forward(
        self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], media: MediaContext
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.queries(x)  # (B, H, T, hd)
        # rows without media attend to their (zero) padding and are zeroed by `keep`: no NaN
        out = F.scaled_dot_product_attention(
            q, *kv, attn_mask=media.attn_mask, enable_gqa=self.n_kv_heads != self.n_heads
        )
        out = out * (media.keep if media.keep.dtype == out.dtype else media.keep.to(out.dtype))
        out = self.o_proj(out.transpose(1, 2).reshape(B, T, -1))
        return out if self.gate is None else torch.tanh(self.gate) * out
