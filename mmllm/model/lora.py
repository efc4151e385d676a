"""LoRA: low-rank adapters on the language model's linear layers (Hu et al., 2021).

A target ``W`` (frozen) becomes ``y = x W^T + b + (alpha / rank) (x A^T) B^T`` with ``A``
``(rank, in)`` random and ``B`` ``(out, rank)`` zero, so an adapted model starts out exactly as
its base. ``LoRALinear`` subclasses ``nn.Linear`` and keeps its ``weight``/``bias``, so every
base tensor keeps its name (the LM key tables, base-weight references and checkpoints are
unchanged); the adapters add ``<target>.lora_a`` and ``<target>.lora_b``.

Which layers: ``MMConfig.lora.targets`` names them (``q_proj``, ``v_proj``...); they are adapted
in the self-attention / MLP of every decoder block, never in the new cross-attention (which
trains in full). The adapters are part of the model's config, so a checkpoint rebuilds them.

Saving keeps them separate: the checkpoint stores ``lora_a``/``lora_b`` (a few hundred KB) and the
base LM stays a reference (``mmllm.weights.base_weights``). ``merge_lora`` folds them into the base
weights for export or int8 inference; the merged LM then differs from its base, so its
reference is dropped and a checkpoint of it stores the LM in full.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from mmllm.config import LORA_TARGETS, LoRAConfig
from mmllm.errors import ConfigError
from mmllm.model.decoder import Decoder

if TYPE_CHECKING:
    from mmllm.model.multimodal import MultimodalLM


class LoRALinear(nn.Linear):
    """``nn.Linear`` plus a rank-``rank`` update scaled by ``alpha / rank``: x ``(..., in)`` ->
    ``(..., out)``."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool, rank: int, alpha: float
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.rank, self.scale = rank, alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, in_features))
        self.lora_b = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear inits its weight

    @classmethod
    def wrap(cls, linear: nn.Linear, rank: int, alpha: float) -> LoRALinear:
        """A LoRA layer sharing ``linear``'s weight and bias tensors (not copies)."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, rank, alpha)
        layer.weight = linear.weight
        layer.bias = linear.bias
        return layer.to(linear.weight.device, linear.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(x, self.lora_a), self.lora_b)  # (..., out)
        return F.linear(x, self.weight, self.bias) + self.scale * update

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing the same function: ``W + scale * B A``."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        linear = linear.to(self.weight.device, self.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.weight + self.scale * self.lora_b @ self.lora_a)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear


def _targets(decoder: Decoder, config: LoRAConfig) -> list[tuple[nn.Module, str]]:
    """``(parent module, attribute)`` of every adapted linear layer, block by block (a
    cross-only layer has no self-attention to adapt)."""
    return [
        (getattr(block, LORA_TARGETS[name]), name)
        for block in decoder.layers
        for name in config.targets
        if hasattr(block, LORA_TARGETS[name])
    ]


def add_lora(decoder: Decoder, config: LoRAConfig) -> None:
    """Replace ``decoder``'s target linear layers by ``LoRALinear`` wrappers of them."""
    for parent, name in _targets(decoder, config):
        linear = getattr(parent, name)
        if isinstance(linear, LoRALinear):
            raise ConfigError(f"{name} already carries a LoRA adapter")
        setattr(parent, name, LoRALinear.wrap(linear, config.rank, config.alpha))


def enable_lora(model: MultimodalLM, config: LoRAConfig) -> None:
    """Give ``model`` the adapters ``config`` describes, and record them in
    its config. A model that already has exactly these adapters is left as it is (resuming)."""
    if model.config.lora == config:
        return
    if model.config.lora is not None:
        raise ConfigError(f"the model already has LoRA {model.config.lora}; asked for {config}")
    add_lora(model.decoder, config)
    model.config = dataclasses.replace(model.config, lora=config)


def merge_lora(model: MultimodalLM) -> MultimodalLM:
    """Fold every adapter of ``model`` into its base weights, in place:
    plain ``nn.Linear`` layers again, ``config.lora`` None, and the LM no longer a reference to
    its base weights (it differs from them). Logits are unchanged up to float rounding."""
    config = model.config
    if config.lora is None:
        return model
    for parent, name in _targets(model.decoder, config.lora):
        setattr(parent, name, getattr(parent, name).merged())
    base = config.base
    if base is not None:
        base = dataclasses.replace(base, lm=None)
        base = base if base.parts() else None
    model.config = dataclasses.replace(config, lora=None, base=base)
    return model
