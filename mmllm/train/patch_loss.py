"""Per-token image targets during the main training (``TrainConfig.patch_weight``).

``mmllm.train.image_pretrain`` teaches the image encoder, alone, what each patch shows (the
colour, kind and size of the shape there, its centre, the word). The main training then erodes
it: on mmllm-tiny ``python -m scripts.probes.token_probe`` finds the shape-centre bins linearly
readable at 98% from the pretrained encoder but 58% / 48% after the projector, and position and
relation are its weakest question types. With ``patch_weight > 0`` a linear head reads each
projected image token (what cross-attention reads) and predicts those targets, and its
cross-entropy, times ``patch_weight``, joins the language-model loss. Only records whose images
have a known scene (the synthetic world) have targets; other images are ignored. One target is
the main training's own, ``kind_count``: how many shapes of this patch's kind the image holds.
Attention averages what it reads, so tokens that each say "a star" read the same for one star
as for three; mmllm-tiny's first stage answers "how many stars?" with "1" whatever the count.
Measured, it has not changed that (61% with and without it; the head reads a token's kind count
at 61-69%: the encoder does not learn to count per token in the second stage's 2600 steps).

``attend_weight > 0`` (``TrainConfig.attend_weight``) supervises where the model looks: for a
synthetic image question that names shapes ("what color is the small square?", "how many
stars?"), each cross-attention layer's attention at the position that predicts the answer's
first token should fall on the tokens of the patches showing those shapes; the loss is minus
the log of the share each head puts there, averaged over heads, layers and such questions.
A relation names two ("is the star left of the circle?"): the first half of the heads should
look at the first, the other half at the second, so that the answer can compare them.
Trained through answers alone, mmllm-tiny's first stage attends to the same tokens whichever
shape is named (``python -m scripts.probes.attention``), and its colour errors name another shape's.

The head trains with the model but is not part of it: it is saved beside the training state
(``patch_head.safetensors``) for exact resume, and a shipped model is the ``MultimodalLM`` alone.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mmllm.errors import CheckpointError, ConfigError
from mmllm.model import IGNORE_INDEX, LMOutput, MultimodalLM
from mmllm.train.image_pretrain import (
    IGNORE,
    MAX_SHAPES,
    PATCH_GROUPS,
    patch_cross_entropy,
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


class WithImageLosses(nn.Module):
    """``model`` whose loss adds ``weight`` x the patch loss of its projected image tokens and
    ``attend_weight`` x the attend loss (see the module docstring).

    Called like ``MultimodalLM`` with ``patch_targets`` ``(n_images, N, n_groups + 1)`` (from
    :func:`image_targets`, in the order of ``media.pixels``) and ``labels``;
    ``last_patch_loss`` and ``last_attend_loss`` keep the latest of each, for logging.
    """

    def __init__(
        self, model: MultimodalLM, head: PatchHead, weight: float, attend_weight: float = 0.0
    ):
        super().__init__()
        self.model, self.head, self.weight = model, head, weight
        self.attend_weight = attend_weight
        self.last_patch_loss = self.last_attend_loss = 0.0

    def forward(self, token_ids, media, *, patch_targets: torch.Tensor, **kwargs) -> LMOutput:
        captured: list[torch.Tensor] = []
        hooks = [
            self.model.image_projector.register_forward_hook(
                lambda _module, _inputs, output: captured.append(output[0])
            )
        ]
        # per cross-attention layer, per call (one, or one per length group of rows): which
        # of the named questions it saw (S_call,) and their weights (S_call, H, N_img)
        looks: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        named = None
        if self.attend_weight and media is not None and media.pixels is not None:
            named = _named_questions(patch_targets, media.image_index, kwargs["labels"])
        if named is not None:
            rows, positions, tokens = named[0], named[1], patch_targets.shape[1]

            def look(layer, module, args, _output):
                x, (k, v), context = args
                if context.rows is None:  # every row of the batch, in order
                    which, local = torch.arange(len(rows), device=rows.device), rows
                else:  # a group of rows: the named questions among them, and where they are
                    here = context.rows.to(rows.device)[None, :] == rows[:, None]  # (S, B_g)
                    which = here.any(1).nonzero().flatten()
                    if not len(which):  # none here (and the media may be fewer tokens)
                        return
                    local = here[which].long().argmax(1)
                weights = module.attention_weights(
                    x[local, positions[which]][:, None], (k[local], v[local]), context.select(local)
                )  # (S_call, H, 1, N_media); an image questioned here is its sample's first item
                looks.setdefault(layer, []).append((which, weights[:, :, 0, :tokens]))

            hooks += [
                layer.cross_attn.register_forward_hook(functools.partial(look, i))
                for i, layer in enumerate(self.model.decoder.layers)
                if hasattr(layer, "cross_attn")
            ]
        try:
            out = self.model(token_ids, media, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()
        if captured:
            logits = self.head(captured[0])
            extra = patch_cross_entropy(logits, patch_targets[..., :NAMED].to(captured[0].device))
        else:  # a batch without images
            extra = sum(p.sum() for p in self.head.parameters()) * 0.0
        self.last_patch_loss = float(extra.detach())
        loss = out.loss + self.weight * extra
        self.last_attend_loss = 0.0  # logged as 0 for a batch without such a question
        if looks:
            per_layer = []  # (S, H, N_img) each, the named questions in order
            for calls in looks.values():
                which = torch.cat([w for w, _ in calls])
                per_layer.append(torch.cat([x for _, x in calls])[torch.argsort(which)])
            wanted = _head_targets(named[2], per_layer[0].shape[1]).to(per_layer[0].dtype)
            shares = torch.stack([(w * wanted).sum(-1) for w in per_layer])  # (layers, S, H)
            attend = -shares.clamp_min(1e-6).log().mean()
            self.last_attend_loss = float(attend.detach())
            loss = loss + self.attend_weight * attend
        return dataclasses.replace(out, loss=loss)


def _named_questions(
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
