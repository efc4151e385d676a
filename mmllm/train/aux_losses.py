"""Auxiliary image losses of the main training, and their targets (used by ``mmllm.train.loss``).

- ``patch_weight`` (``TrainConfig.patch_weight``): a linear head (``PatchHead``) reads each
  projected image cell and predicts what the patch shows (the image pretraining's targets plus
  ``kind_count``), so the main training keeps what the encoder was taught.
- ``attend_weight``: for a synthetic question that names shapes, each cross-attention layer,
  at the position that predicts the answer, should look at the cells showing them (for a
  relation, half the heads at each shape); the loss is minus the log of that attention share.

Only records whose images have a known scene (the synthetic world) have targets. The head
trains with the model but is not part of it: it is saved beside the training state
(``patch_head.safetensors``) for exact resume. Why these exist and what they measured:
``docs/lab/2026-12-training-notes.md``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mmllm.data.collate import IGNORE_INDEX
from mmllm.errors import CheckpointError, ConfigError
from mmllm.model.cache import MediaContext
from mmllm.model.multimodal import MultimodalLM
from mmllm.train.image_pretrain import (
    IGNORE,
    MAX_SHAPES,
    PATCH_GROUPS,
    patch_shapes,
    patch_table,
)

HEAD_FILE = "patch_head.safetensors"
TARGET_GROUPS = {**PATCH_GROUPS, "kind_count": MAX_SHAPES + 1}  # what PatchHead predicts
NAMED = len(TARGET_GROUPS)  # image_targets' last column: which named group the patch shows


def token_grid(model: MultimodalLM) -> int:
    """The side of the model's square image token grid; ``ConfigError`` when its projected
    image tokens are not one per patch (a ViT's) or per feature-map cell (a CNN hybrid's)."""
    config = model.config
    if model.image_encoder is None or config.image is None:
        raise ConfigError("patch_weight needs a model with an image encoder")
    if config.projector.kind != "mlp" or config.image.kind not in ("vit", "cnn_hybrid"):
        raise ConfigError(
            "patch_weight needs one projected token per patch: a ViT or CNN-hybrid image "
            f"encoder and the 'mlp' projector (this model: {config.image.kind}, "
            f"{config.projector.kind!r})"
        )
    return math.isqrt(config.image.n_tokens)  # (image_size // patch_size) ** 2


def image_targets(scenes: list, referents: list[tuple], grid: int) -> torch.Tensor:
    """One image's scene per entry (None: unknown) and the groups of shapes its question names
    (``Record.referents``) -> targets ``(n, grid * grid, len(TARGET_GROUPS) + 1)``: the image
    pretraining's ``patch_targets``; ``kind_count``, how many shapes of the patch's shape's
    kind the image holds (0: no shape there); then column ``NAMED``: ``g`` where the patch
    shows a shape of group ``g`` (1 or 2), 0 elsewhere; IGNORE throughout when no group is
    named or a group covers no patch."""
    ignored = torch.full((grid * grid, NAMED + 1), IGNORE, dtype=torch.long)
    rows = []
    for scene, groups in zip(scenes, referents, strict=True):
        if scene is None:
            rows.append(ignored)
            continue
        index = patch_shapes(scene, grid)  # rendered once for both targets
        shows = index - 1  # the shape index; -1: background, word too
        flag = torch.zeros(len(shows), dtype=torch.long)
        for g, group in enumerate(groups, start=1):
            flag[torch.from_numpy(np.isin(shows, group))] = g
        if not groups or any(not (flag == g).any() for g in range(1, len(groups) + 1)):
            flag.fill_(IGNORE)
        table = torch.cat([patch_table(scene), _kind_counts(scene)[:, None]], 1)
        targets = table[torch.from_numpy(index)]  # patch_targets(scene, grid), kind_count
        rows.append(torch.cat([targets, flag[:, None]], 1))
    return torch.stack(rows) if rows else ignored.new_empty((0, *ignored.shape))


def _kind_counts(scene) -> torch.Tensor:
    """``kind_count`` per entry of ``patch_table(scene)`` ``(n_shapes + 2,)``: 0 for the
    background and the word, for each shape the number of shapes of its kind."""
    kinds = [s.kind for s in scene.shapes]
    return torch.tensor([0, *(kinds.count(k) for k in kinds), 0])


class PatchHead(nn.Module):
    """Image tokens ``(n, N, D)`` -> logits per patch group, each ``(n, N, n_classes)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, sum(TARGET_GROUPS.values()))

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        return list(self.linear(tokens).split(list(TARGET_GROUPS.values()), -1))


def attention_shares(
    decoder,
    queries: list[torch.Tensor],
    context: MediaContext,
    named: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    rows: torch.Tensor | None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Where each cross-attention layer looks from the named questions among one group of a
    batch's rows: ``[(which (S_g,), weights (layers, S_g, H, N_img))]``, or ``[]`` if none is
    here. ``queries``: each cross-attention layer's query states ``(B_g, T, D)``
    (``Decoder.hidden(cross_queries=...)``); ``named``: ``named_questions``' output;
    ``rows``: the group's rows of the batch (None: every row, in order)."""
    samples, positions, flags = named
    if rows is None:
        which, local = torch.arange(len(samples), device=samples.device), samples
    else:  # the named questions among these rows, and where they are in the group
        here = rows.to(samples.device)[None, :] == samples[:, None]  # (S, B_g)
        which = here.any(1).nonzero().flatten()
        if not len(which):
            return []
        local = here[which].long().argmax(1)
    cells = flags.shape[1]
    layers = [decoder.layers[i].cross_attn for i in decoder.cross_layers]
    weights = []
    for attention, query, (k, v) in zip(layers, queries, context.kv, strict=True):
        w = attention.attention_weights(
            query[local, positions[which]][:, None], (k[local], v[local]), context.select(local)
        )  # (S_g, H, 1, N_media); an image questioned here is its sample's first item
        weights.append(w[:, :, 0, :cells])
    return [(which, torch.stack(weights))]


def attend_loss(
    looks: list[tuple[torch.Tensor, torch.Tensor]],
    named: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """Minus the log of the attention share each head puts on the cells it should look at,
    averaged over layers, heads and named questions; ``looks``: ``attention_shares``' output
    of every group of the batch."""
    which = torch.cat([w for w, _ in looks])
    weights = torch.cat([x for _, x in looks], 1)[:, torch.argsort(which)]  # (L, S, H, N)
    wanted = _head_targets(named[2], weights.shape[2]).to(weights.dtype)  # (S, H, N)
    shares = (weights * wanted).sum(-1)  # (L, S, H)
    return -shares.clamp_min(1e-6).log().mean()


def named_questions(
    patch_targets: torch.Tensor, image_index: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """For the images whose question names shapes: their samples ``(S,)``, each sample's
    position that predicts its first answer token ``(S,)``, and each patch's named group
    ``(S, N)`` (0: none); None if there are none."""
    flags = patch_targets[..., NAMED]
    images = (flags[:, 0] != IGNORE).nonzero().flatten()
    rows = image_index.to(images.device)[images]
    answers = labels[rows, 1:] != IGNORE_INDEX  # position t predicts label t + 1
    kept = answers.any(1)  # a prompt cut at max_len leaves no answer to look from
    images, rows, answers = images[kept], rows[kept], answers[kept]
    if not len(images):
        return None
    positions = answers.long().argmax(1)  # the first labelled position
    return rows, positions, flags[images]


def _head_targets(flags: torch.Tensor, heads: int) -> torch.Tensor:
    """Named-group ids per patch ``(S, N)`` -> where each head should look ``(S, H, N)`` (0/1):
    every head on group 1, or with a second group, the second half of the heads on it."""
    group = torch.ones(len(flags), heads, dtype=flags.dtype, device=flags.device)
    two = flags.amax(-1) == 2  # (S,)
    group[two, heads // 2 :] = 2
    return flags[:, None, :] == group[:, :, None]


def save_head(head: PatchHead, folder: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, folder / HEAD_FILE)


def load_head(head: PatchHead, folder: Path) -> None:
    """Restore the head saved in training checkpoint ``folder`` (``CheckpointError`` if none)."""
    path = folder / HEAD_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{folder} was saved without patch_weight or attend_weight (no {HEAD_FILE}): "
            "resume it with the weights it was started with"
        )
    try:
        head.load_state_dict(load_file(path))
    except RuntimeError as error:  # saved by a version with other targets
        raise CheckpointError(f"{path} does not fit this version's patch head: {error}") from None
