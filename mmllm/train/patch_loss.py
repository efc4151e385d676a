"""Per-token image targets during the main training (``TrainConfig.patch_weight``).

``mmllm.train.image_pretrain`` teaches the image encoder, alone, what each patch shows (the
colour, kind and size of the shape there, its centre, the word). The main training then erodes
it: on mmllm-tiny ``python -m mmllm.eval.token_probe`` finds the shape-centre bins linearly
readable at 98% from the pretrained encoder but 58% / 48% after the projector, and position and
relation are its weakest question types. With ``patch_weight > 0`` a linear head reads each
projected image token (what cross-attention reads) and predicts those targets, and its
cross-entropy, times ``patch_weight``, joins the language-model loss. Only records whose images
have a known scene (the synthetic world) have targets; other images are ignored.

The head trains with the model but is not part of it: it is saved beside the training state
(``patch_head.safetensors``) for exact resume, and a shipped model is the ``MultimodalLM`` alone.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mmllm.errors import CheckpointError, ConfigError
from mmllm.model import LMOutput, MultimodalLM
from mmllm.train.image_pretrain import (
    IGNORE,
    PATCH_GROUPS,
    RENDER_SIZE,
    patch_cross_entropy,
    patch_targets,
)

HEAD_FILE = "patch_head.safetensors"


def token_grid(model: MultimodalLM) -> int:
    """The side of the model's square image token grid; ``ConfigError`` when its projected
    image tokens are not one per patch of a grid that tiles the synthetic scenes."""
    config = model.config
    if model.image_encoder is None or config.image is None:
        raise ConfigError("patch_weight needs a model with an image encoder")
    if config.projector.kind != "mlp" or config.image.kind != "vit":
        raise ConfigError(
            "patch_weight needs one projected token per patch: a ViT image encoder and the "
            f"'mlp' projector (this model: {config.image.kind}, {config.projector.kind!r})"
        )
    grid = math.isqrt(config.image.n_tokens)
    if grid * grid != config.image.n_tokens or RENDER_SIZE % grid:
        raise ConfigError(
            f"patch_weight: a {grid}x{grid} token grid does not tile {RENDER_SIZE} px scenes"
        )
    return grid


def image_targets(scenes: list, grid: int) -> torch.Tensor:
    """One image's scene per entry (None: unknown) -> targets ``(n, grid * grid, n_groups)``."""
    ignored = torch.full((grid * grid, len(PATCH_GROUPS)), IGNORE, dtype=torch.long)
    rows = [ignored if s is None else patch_targets(s, grid) for s in scenes]
    return torch.stack(rows) if rows else ignored.new_empty((0, *ignored.shape))


class PatchHead(nn.Module):
    """Image tokens ``(n, N, D)`` -> logits per patch group, each ``(n, N, n_classes)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, sum(PATCH_GROUPS.values()))

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        return list(self.linear(tokens).split(list(PATCH_GROUPS.values()), -1))


class WithPatchLoss(nn.Module):
    """``model`` whose loss adds ``weight`` x the patch loss of its projected image tokens.

    Called like ``MultimodalLM`` with ``patch_targets`` ``(n_images, N, n_groups)`` (in the
    order of ``media.pixels``); ``last_patch_loss`` keeps the latest patch loss, for logging.
    """

    def __init__(self, model: MultimodalLM, head: PatchHead, weight: float):
        super().__init__()
        self.model, self.head, self.weight = model, head, weight
        self.last_patch_loss = 0.0

    def forward(self, token_ids, media, *, patch_targets: torch.Tensor, **kwargs) -> LMOutput:
        captured: list[torch.Tensor] = []
        hook = self.model.image_projector.register_forward_hook(
            lambda _module, _inputs, output: captured.append(output[0])
        )
        try:
            out = self.model(token_ids, media, **kwargs)
        finally:
            hook.remove()
        if captured:
            logits = self.head(captured[0])
            extra = patch_cross_entropy(logits, patch_targets.to(captured[0].device))
        else:  # a batch without images
            extra = sum(p.sum() for p in self.head.parameters()) * 0.0
        self.last_patch_loss = float(extra.detach())
        return dataclasses.replace(out, loss=out.loss + self.weight * extra)


def save_head(head: PatchHead, folder: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, folder / HEAD_FILE)


def load_head(head: PatchHead, folder: Path) -> None:
    """Restore the head saved in training checkpoint ``folder`` (``CheckpointError`` if none)."""
    path = folder / HEAD_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{folder} was saved without patch_weight (no {HEAD_FILE}): resume it with the "
            "patch_weight it was started with"
        )
    head.load_state_dict(load_file(path))
