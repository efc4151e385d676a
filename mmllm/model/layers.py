"""Decoder building blocks in the Llama layout: RMSNorm, rotary embeddings, SwiGLU MLP.

Parameter names match Hugging Face's Llama (``gate_proj``/``up_proj``/``down_proj``, norm
``weight``) so pretrained weights map in by a plain key table. RoPE uses the "rotate half"
layout of those checkpoints (Su et al., 2021), with optional ``linear`` or Llama 3.1 frequency
scaling for context extension.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmllm.config import RopeScaling


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich, 2019), computed in fp32 like Llama."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)  # one op, same math
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def column_major_(linear: nn.Linear) -> nn.Linear:
    """Store ``linear``'s weight ``(out, in)`` column-major, in place: the same values and shape,
    laid out as its transpose ``(in, out)``, which ``F.linear`` then multiplies by directly. At
    decode batch sizes (1-8 rows) the CPU GEMM is ~1.5x faster in this layout (GPT-2's Conv1D
    stores the same); the layout survives ``load_state_dict``, ``.to()`` and training."""
    with torch.no_grad():
        linear.weight.data = linear.weight.data.t().contiguous().t()
    return linear


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """The block family's norm: ``rms`` (``RMSNorm``) or ``layer`` (LayerNorm with a bias)."""
    return RMSNorm(dim, eps) if kind == "rms" else nn.LayerNorm(dim, eps)


def make_mlp(kind: str, dim: int, hidden_dim: int, bias: bool = False) -> nn.Module:
    """The block family's MLP: ``swiglu``, or one GELU layer (``gelu``; ``gelu_tanh``: GPT-2's
    tanh approximation)."""
    if kind == "swiglu":
        return SwiGLU(dim, hidden_dim, bias)
    return GeluMLP(dim, hidden_dim, bias, "tanh" if kind == "gelu_tanh" else "none")


class GeluMLP(nn.Module):
    """``down(gelu(up(x)))``: the MLP of GPT-2 and BERT (names as the Llama layout's)."""

    def __init__(self, dim: int, hidden_dim: int, bias: bool = True, approximate: str = "none"):
        super().__init__()
        self.up_proj = nn.Linear(dim, hidden_dim, bias=bias)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=bias)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x), approximate=self.approximate))


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` (Shazeer, 2020)."""

    def __init__(self, dim: int, hidden_dim: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden_dim, bias=bias)
        self.up_proj = nn.Linear(dim, hidden_dim, bias=bias)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class RotaryEmbedding(nn.Module):
    """Precomputed cos/sin tables; ``forward(positions (B, T))`` -> cos, sin ``(B, 1, T, hd)``."""

    def __init__(
        self,
        head_dim: int,
        max_seq_len: int,
        theta: float = 10000.0,
        scaling: RopeScaling | None = None,
    ):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        if scaling is not None:
            inv_freq = scale_frequencies(inv_freq, scaling)
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)  # (T_max, hd)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(
        self, positions: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin ``(B, 1, T, hd)`` in ``dtype`` (that of the queries and keys they rotate)."""
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]
        return (cos, sin) if dtype == cos.dtype else (cos.to(dtype), sin.to(dtype))


def scale_frequencies(inv_freq: torch.Tensor, scaling: RopeScaling) -> torch.Tensor:
    """Rotary inverse frequencies ``(hd/2,)`` after ``linear`` or ``llama3`` context scaling."""
    if scaling.kind == "linear":
        return inv_freq / scaling.factor
    # llama3: long wavelengths are interpolated by `factor`, short ones kept, the band between
    # blended linearly in (context / wavelength)
    wavelength = 2 * math.pi / inv_freq
    context = scaling.original_max_seq_len
    blend = (context / wavelength - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    blended = (1 - blend) * inv_freq / scaling.factor + blend * inv_freq
    long = wavelength > context / scaling.low_freq_factor
    scaled = torch.where(long, inv_freq / scaling.factor, blended)
    return torch.where(wavelength < context / scaling.high_freq_factor, inv_freq, scaled)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x (B, H, T, hd)`` by the angles in ``cos``/``sin`` ``(B, 1, T, hd)``."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    if cos.dtype != x.dtype:
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotated * sin
