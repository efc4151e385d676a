"""Optional int8 weight quantization for CPU inference.

Every ``nn.Linear`` (decoder, cross-attention, projectors, encoder blocks) becomes a dynamically
quantized int8 linear (int8 weights, activations quantized per batch on the fly, fbgemm/x86
kernels). The tied LM head stays fp32 (it is the embedding matrix). This uses
``torch.ao.quantization.quantize_dynamic``, which torch 2.9 (pinned) still ships but has
deprecated; moving past torch 2.9 means porting this file to ``torchao``.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from mmllm.errors import InputError

QUANTIZATIONS = ("int8",)


def quantize(model: nn.Module, kind: str) -> nn.Module:
    """Return ``model`` with its linear layers quantized to ``kind`` (CPU inference only)."""
    if kind not in QUANTIZATIONS:
        raise InputError(f"unknown quantization {kind!r}; choose from {QUANTIZATIONS}")
    if next(model.parameters()).device.type != "cpu":
        raise InputError("int8 quantization runs on the CPU; load with device='cpu'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated")
        return torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)


def is_quantized(model: nn.Module) -> bool:
    """Whether any layer of ``model`` is one of ``quantize``'s (torch's quantized modules)."""
    return any("quantized" in type(m).__module__ for m in model.modules())
