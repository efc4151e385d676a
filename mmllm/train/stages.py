"""Which parameters train in each stage: the one visible trainable/frozen rule.

- ``full``: everything.
- ``media``: encoders, projectors, media packing and cross-attention; the language model frozen.
- ``align``: projectors, media packing and cross-attention only; encoders and LM frozen.
"""

from __future__ import annotations

from torch import nn

STAGES = ("full", "media", "align")


def is_trainable(name: str, stage: str) -> bool:
    """Whether parameter ``name`` of a ``MultimodalLM`` trains in ``stage``."""
    if stage == "full":
        return True
    cross = ".cross_attn." in name or ".cross_attn_layernorm." in name
    new_parts = name.startswith(("image_projector.", "audio_projector.", "media_packer."))
    if stage == "align":
        return cross or new_parts
    if stage == "media":
        return cross or new_parts or name.startswith(("image_encoder.", "audio_encoder."))
    raise ValueError(f"unknown stage {stage!r}; choose from {STAGES}")


def set_trainable(model: nn.Module, stage: str) -> list[str]:
    """Freeze/unfreeze ``model``'s parameters for ``stage``; returns the trainable names."""
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(is_trainable(name, stage))
        if param.requires_grad:
            trainable.append(name)
    return trainable
