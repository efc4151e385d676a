"""Image encoder pretraining on the synthetic world's scene graphs (the ``tiny`` recipe, step 1).

    python -m mmllm.train.image_pretrain --out runs/tiny/image-pretrain --steps 3000

A ViT trained from scratch only through captions and answers learns colours but hardly shapes: the
language loss reaches it through cross-attention, a weak and late signal (a linear probe on the
first mmllm-tiny's image tokens finds colours but not which shapes are present). Here the encoder
first learns to say what is in the picture, the way a vision backbone is pretrained on labels
before a language model reads it. Every target is read off the scene graph (:func:`scene_targets`):
which colour-kind pairs are present and on which side, sizes, counts per kind and the rendered
word. A linear head reads the mean and the max of the encoder's tokens, so the facts must live in
the tokens themselves, where cross-attention will look for them. A second linear head reads each
token alone (:func:`patch_targets`): the colour, kind and size of the shape its patch shows, where
that shape's centre is, or which word it shows, so each token says what is at its place ("red
circle here"): what cross-attention must find when a question names one object. (With pooled
targets alone the shipped model's answers ignored the object named, "what color is the star?" got
the circle's colour; with per-token targets too they still did after 2000 steps until the
cross-attention got QK-norm, see ``mmllm.model.attention``.) The heads are thrown away;
``image_encoder.safetensors`` starts ``mmllm train --image-init``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from encoders import ImageEncoderConfig
from encoders.image import ImageEncoder
from mmllm.data.synthetic_image import (
    COLORS,
    KINDS,
    SIZES,
    WORD_LABEL,
    WORDS,
    Scene,
    label_map,
    render_scene,
    sample_scene,
)
from mmllm.presets import PRESETS
from mmllm.processing import ImageProcessor
from mmllm.train.optim import adamw, lr_at

log = logging.getLogger(__name__)
PRETRAIN_DIR = "image-pretrain"  # inside a recipe's run folder
WEIGHTS_FILE = "image_encoder.safetensors"
REPORT_FILE = "image_pretrain.json"
MAX_SHAPES = 4
PAIRS = [(c, k) for c in COLORS for k in KINDS]
SIDES = ("left", "right", "top", "bottom")
# multi-label targets (sigmoid), in this order: colour-kind pair present, the pair present on each
# side, size-kind and size-colour pairs present
BIT_GROUPS = {
    "pairs": len(PAIRS),
    "sides": len(PAIRS) * len(SIDES),
    "size_kind": len(SIZES) * len(KINDS),
    "size_color": len(SIZES) * len(COLORS),
}
# single-label targets (softmax): shape count, count of each kind, the word (or none)
CLASS_GROUPS = {"count": MAX_SHAPES, **{f"count_{k}": MAX_SHAPES + 1 for k in KINDS}}
CLASS_GROUPS["word"] = len(WORDS) + 1
# per-token targets (softmax per token), in this order: the colour, kind and size of the shape the
# patch shows (0: none), the word it shows (0: none), the bin of its shape's centre x and y
POSITION_BINS = 8  # relation questions need centres >= 0.2 apart: always in different bins
PATCH_GROUPS = {
    "color": len(COLORS) + 1,
    "kind": len(KINDS) + 1,
    "size": len(SIZES) + 1,
    "word": len(WORDS) + 1,
    "x": POSITION_BINS,
    "y": POSITION_BINS,
}
RENDER_SIZE = 128  # render_scene's default, the size the training data is drawn at
PATCH_COVER = 1 / 8  # a patch shows a shape (or the word) covering at least this share of it
IGNORE = -100  # no target (cross-entropy's ignore_index): positions of patches without a shape
_SEED_STREAMS = {"train": 7301, "heldout": 7302}


def scene_targets(scene: Scene) -> tuple[torch.Tensor, torch.Tensor]:
    """Scene -> bits ``(sum(BIT_GROUPS),)`` in {0, 1}, class ids ``(len(CLASS_GROUPS),)``."""
    pairs = torch.zeros(len(PAIRS), len(SIDES))
    present = torch.zeros(len(PAIRS))
    size_kind = torch.zeros(len(SIZES), len(KINDS))
    size_color = torch.zeros(len(SIZES), len(COLORS))
    for s in scene.shapes:
        p = PAIRS.index((s.color, s.kind))
        present[p] = 1
        pairs[p, 0 if s.x < 0.5 else 1] = 1
        pairs[p, 2 if s.y < 0.5 else 3] = 1
        size_kind[SIZES.index(s.size), KINDS.index(s.kind)] = 1
        size_color[SIZES.index(s.size), list(COLORS).index(s.color)] = 1
    bits = torch.cat([present, pairs.flatten(), size_kind.flatten(), size_color.flatten()])
    counts = [len(scene.shapes) - 1] + [sum(s.kind == k for s in scene.shapes) for k in KINDS]
    word = 0 if scene.word is None else WORDS.index(scene.word) + 1
    return bits, torch.tensor([*counts, word])


def patch_shapes(scene: Scene, grid: int) -> np.ndarray:
    """What each patch of a ``grid x grid`` token grid (raster order) shows: ``(grid * grid,)``
    0 the background, ``i + 1`` shape ``scene.shapes[i]``, ``len(scene.shapes) + 1`` the word.

    A patch shows the shape (or word) covering most of it, if that covers at least PATCH_COVER
    of the patch; otherwise the background. A grid that does not tile RENDER_SIZE (a CNN's 7x7
    cells) reads the scene drawn a little larger, at the next multiple of ``grid``.
    """
    cell = -(-RENDER_SIZE // grid)
    labels = label_map(scene, cell * grid)
    blocks = labels.reshape(grid, cell, grid, cell).transpose(0, 2, 1, 3).reshape(grid * grid, -1)
    values = np.array([*range(1, len(scene.shapes) + 1), WORD_LABEL])
    cover = (blocks[:, :, None] == values).mean(1)  # (P, n_shapes + 1)
    best = cover.argmax(1)
    shown = cover[np.arange(len(best)), best] >= PATCH_COVER
    return np.where(shown, best + 1, 0)


def patch_targets(scene: Scene, grid: int) -> torch.Tensor:
    """Scene -> per-patch class ids ``(grid * grid, len(PATCH_GROUPS))`` for a ``grid x grid``
    token grid in raster order (as a ViT's patch tokens), for what :func:`patch_shapes` says
    each patch shows (the background: every group 0, positions IGNORE)."""
    return patch_table(scene)[torch.from_numpy(patch_shapes(scene, grid))]


def patch_table(scene: Scene) -> torch.Tensor:
    """The class ids of what a patch can show ``(len(scene.shapes) + 2, len(PATCH_GROUPS))``,
    indexed like :func:`patch_shapes`: the background, each shape, the word."""
    rows = [[0, 0, 0, 0, IGNORE, IGNORE]]  # the background
    for s in scene.shapes:
        rows.append(
            [
                list(COLORS).index(s.color) + 1,
                KINDS.index(s.kind) + 1,
                SIZES.index(s.size) + 1,
                0,
                min(int(s.x * POSITION_BINS), POSITION_BINS - 1),
                min(int(s.y * POSITION_BINS), POSITION_BINS - 1),
            ]
        )
    word = 0 if scene.word is None else WORDS.index(scene.word) + 1
    rows.append([0, 0, 0, word, IGNORE, IGNORE])
    return torch.tensor(rows)


class SceneBatches(Dataset):
    """Item ``i``: batch ``i`` of rendered scenes, pixels ``(B, 3, S, S)`` and their targets
    (bits, classes, per-patch classes); deterministic by (split, seed, i)."""

    def __init__(self, config: ImageEncoderConfig, batch_size: int, seed: int, split: str):
        self.processor = ImageProcessor(config)
        self.grid = config.image_size // config.patch_size
        self.batch_size, self.seed, self.stream = batch_size, seed, _SEED_STREAMS[split]

    def __len__(self) -> int:
        return 2**31

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng([self.stream, self.seed, index])
        pixels, bits, classes, patches = [], [], [], []
        for _ in range(self.batch_size):
            scene = sample_scene(rng)
            pixels.append(self.processor(render_scene(scene, rng, RENDER_SIZE)))
            b, c = scene_targets(scene)
            bits.append(b)
            classes.append(c)
            patches.append(patch_targets(scene, self.grid))
        return torch.stack(pixels), torch.stack(bits), torch.stack(classes), torch.stack(patches)


class SceneHead(nn.Module):
    """Tokens ``(B, N, D)`` -> bit logits ``(B, sum(BIT_GROUPS))``, class logits per group
    ``(B, n_classes)`` (both linear in the tokens' mean and max) and per-patch logits per group
    ``(B, N, n_classes)`` (linear in each token)."""

    def __init__(self, dim: int):
        super().__init__()
        self.bits = nn.Linear(2 * dim, sum(BIT_GROUPS.values()))
        self.classes = nn.Linear(2 * dim, sum(CLASS_GROUPS.values()))
        self.patches = nn.Linear(dim, sum(PATCH_GROUPS.values()))

    def forward(
        self, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        pooled = torch.cat([tokens.mean(1), tokens.amax(1)], dim=-1)
        classes = self.classes(pooled).split(list(CLASS_GROUPS.values()), -1)
        patches = self.patches(tokens).split(list(PATCH_GROUPS.values()), -1)
        return self.bits(pooled), list(classes), list(patches)


def scene_loss(
    head_out,
    bits: torch.Tensor,
    classes: torch.Tensor,
    patches: torch.Tensor,
    patch_weight: float = 1.0,
) -> torch.Tensor:
    """Mean binary cross-entropy over the bits, plus the mean cross-entropy over the class
    groups, plus ``patch_weight`` x the mean per-token cross-entropy over the patch groups."""
    bit_logits, class_logits, patch_logits = head_out
    loss = F.binary_cross_entropy_with_logits(bit_logits, bits)
    ce = [F.cross_entropy(logits, classes[:, i]) for i, logits in enumerate(class_logits)]
    loss = loss + torch.stack(ce).mean()
    if patch_weight:
        loss = loss + patch_weight * patch_cross_entropy(patch_logits, patches)
    return loss


def patch_cross_entropy(patch_logits: list[torch.Tensor], patches: torch.Tensor) -> torch.Tensor:
    """Mean over the patch groups of each group's cross-entropy on the tokens that have a target
    (a group without any adds 0, keeping its logits in the graph); logits ``(B, N, n_classes)``
    per group, ``patches`` ``(B, N, n_groups)``."""
    losses = []
    for i, logits in enumerate(patch_logits):
        target = patches[..., i].flatten()
        if (target != IGNORE).any():
            flat = logits.flatten(0, 1).float()
            losses.append(F.cross_entropy(flat, target, ignore_index=IGNORE))
        else:
            losses.append(logits.sum() * 0.0)
    return torch.stack(losses).mean()


@torch.no_grad()
def scene_scores(encoder: ImageEncoder, head: SceneHead, batches) -> dict[str, float]:
    """Held-out accuracy per target group: all of a scene's bits right (multi-label groups), the
    class right (single-label groups), and ``patch_<group>``: the class right on the patches that
    show something for that group (a shape; for ``patch_word`` the word)."""
    encoder.eval()
    right: dict[str, float] = {}
    n = 0
    patch_right = torch.zeros(len(PATCH_GROUPS))
    patch_n = torch.zeros(len(PATCH_GROUPS))
    for pixels, bits, classes, patches in batches:
        bit_logits, class_logits, patch_logits = head(encoder(pixels)[0])
        shows_shape = patches[..., 0] > 0
        for i, name in enumerate(PATCH_GROUPS):
            shown = patches[..., i] > 0 if name == "word" else shows_shape
            ok = (patch_logits[i].argmax(-1) == patches[..., i]) & shown
            patch_right[i] += ok.sum()
            patch_n[i] += shown.sum()
        predicted = bit_logits > 0
        start = 0
        for name, size in BIT_GROUPS.items():
            part = slice(start, start + size)
            ok = (predicted[:, part] == (bits[:, part] > 0.5)).all(1)
            right[name] = right.get(name, 0.0) + ok.float().sum().item()
            start += size
        for i, name in enumerate(CLASS_GROUPS):
            ok = class_logits[i].argmax(-1) == classes[:, i]
            right[name] = right.get(name, 0.0) + ok.float().sum().item()
        n += len(pixels)
    encoder.train()
    scores = {name: round(v / n, 4) for name, v in right.items()}
    for i, name in enumerate(PATCH_GROUPS):
        scores[f"patch_{name}"] = round(float(patch_right[i] / patch_n[i].clamp(min=1)), 4)
    return scores


@dataclass
class ImagePretrainConfig:
    out: str = "runs/tiny/image-pretrain"
    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.05
    patch_weight: float = 1.0  # weight of the per-token targets (0: pooled targets alone)
    seed: int = 0
    heldout_batches: int = 16
    num_workers: int = 0
    image: dict = field(default_factory=dict)  # ImageEncoderConfig as a dict


def pretrain_image_encoder(cfg: ImagePretrainConfig) -> Path:
    """Train an image encoder on scene targets; writes ``WEIGHTS_FILE`` and ``REPORT_FILE``
    (config, held-out scores, wall time) into ``cfg.out`` and returns the weights' path."""
    t0 = time.time()  # the wall time counts the set-up and the last evaluation too
    torch.manual_seed(cfg.seed)
    config = ImageEncoderConfig(**cfg.image)
    encoder, head = ImageEncoder(config), SceneHead(config.dim)
    named = [*encoder.named_parameters(), *head.named_parameters(prefix="head")]
    optimizer = adamw(named, cfg.lr, cfg.weight_decay)
    heldout_set = SceneBatches(config, 64, cfg.seed, "heldout")
    heldout = [heldout_set[i] for i in range(cfg.heldout_batches)]
    loader = DataLoader(
        SceneBatches(config, cfg.batch_size, cfg.seed, "train"),
        sampler=range(cfg.steps),
        batch_size=None,
        num_workers=cfg.num_workers,
    )
    losses: list[float] = []
    bar = tqdm(total=cfg.steps, disable=None, desc="image pretrain")  # a bar on a terminal only
    for step, (pixels, bits, classes, patches) in enumerate(loader):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = scene_loss(head(encoder(pixels)[0]), bits, classes, patches, cfg.patch_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
        optimizer.step()
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    scores = scene_scores(encoder, head, heldout)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_FILE
    tmp = weights.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(tmp))
    tmp.replace(weights)
    span = max(1, len(losses) // 10)  # the first and last tenth of the run
    report = {
        "config": asdict(cfg),
        "heldout": scores,
        "loss_start": round(float(np.mean(losses[:span])), 4),
        "loss_end": round(float(np.mean(losses[-span:])), 4),
        "wall_s": round(time.time() - t0, 1),
    }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    log.info("image pretraining: held-out %s", scores)
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = ImagePretrainConfig()
    for name in (
        "out",
        "steps",
        "batch_size",
        "lr",
        "warmup",
        "patch_weight",
        "seed",
        "num_workers",
    ):
        value = getattr(defaults, name)
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    parser.add_argument("--preset", default="tiny", help="whose image encoder (mmllm.presets)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    values = {k: v for k, v in vars(args).items() if k != "preset"}
    image = asdict(PRESETS[args.preset].image)
    path = pretrain_image_encoder(ImagePretrainConfig(**values, image=image))
    print(f"image encoder: {path}")
    print(json.dumps(json.loads((path.parent / REPORT_FILE).read_text())["heldout"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
