"""Which parameters train in each stage: the one visible trainable/frozen rule.

- ``full``: everything.
- ``media``: encoders, projectors, media packing and cross-attention; the language model frozen.
- ``align``: projectors, media packing and cross-attention only; encoders and LM frozen.
- ``decoder``: the language model with its cross-attention; encoders, projectors and media
  packing frozen, so the media tokens stay as they are (LoRA adapters train, if any).

New parts always train: besides the projectors, media packing and cross-attention, these are
the LoRA adapters of the language model (``*.lora_a``/``*.lora_b``, see ``mmllm.model.lora``)
and the layers a CNN hybrid image encoder puts on top of its pretrained CNN
(``image_encoder.adapter``), and the tokens of the real recognizers' findings (``recognition``).
"""

from __future__ import annotations

from torch import nn

# what trains in each stage, in a phrase (a model card's stage line says it)
STAGE_NOTES = {
    "full": "everything trains",
    "media": "the language model frozen",
    "align": "only the projectors, media packing and cross-attention train",
    "decoder": "the encoders and projectors frozen (the image and audio tokens stay as they were)",
}
STAGES = tuple(STAGE_NOTES)
NEW_PARTS = (
    "image_projector.",
    "audio_projector.",
    "media_packer.",
    "image_encoder.adapter.",
    "recognition.",
)
LORA_SUFFIXES = (".lora_a", ".lora_b")


def is_trainable(name: str, stage: str) -> bool:
    """Whether parameter ``name`` of a ``MultimodalLM`` trains in ``stage``."""
    if stage == "full":
        return True
    cross = ".cross_attn." in name or ".cross_attn_layernorm." in name
    new_parts = name.startswith(NEW_PARTS) or name.endswith(LORA_SUFFIXES)
    if stage == "align":
        return cross or new_parts
    if stage == "decoder":
        media = name.startswith(("image_encoder.", "audio_encoder.", *NEW_PARTS))
        return not media or name.endswith(LORA_SUFFIXES)
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
