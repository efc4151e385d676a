"""Image encoder pretraining on scene graphs, and its weights as the start of `mmllm train`."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from mmllm import MultimodalLM
from mmllm.data.synthetic_image import KINDS, WORDS, Scene, Shape
from mmllm.errors import CheckpointError
from mmllm.train.image_pretrain import (
    BIT_GROUPS,
    CLASS_GROUPS,
    PAIRS,
    SIDES,
    WEIGHTS_FILE,
    ImagePretrainConfig,
    pretrain_image_encoder,
    scene_targets,
)
from mmllm.train.trainer import load_image_encoder
from tests.conftest import tiny_config
from tests.test_train import small_run


def test_scene_targets_read_the_scene_graph():
    scene = Scene(
        shapes=(
            Shape("circle", "red", "small", 0.2, 0.7),
            Shape("star", "blue", "large", 0.8, 0.3),
            Shape("star", "blue", "small", 0.6, 0.8),
        ),
        background="plain",
        word="cat",
        word_pos=(0.5, 0.14),
    )
    bits, classes = scene_targets(scene)
    assert bits.shape == (sum(BIT_GROUPS.values()),)
    n = len(PAIRS)
    present = bits[:n]
    assert {PAIRS[i] for i in present.nonzero().flatten().tolist()} == {
        ("red", "circle"),
        ("blue", "star"),
    }
    sides = bits[n : n + n * len(SIDES)].view(n, len(SIDES))
    assert sides[PAIRS.index(("red", "circle"))].tolist() == [1, 0, 0, 1]  # left, bottom
    assert sides[PAIRS.index(("blue", "star"))].tolist() == [0, 1, 1, 1]  # right; top and bottom
    assert classes.shape == (len(CLASS_GROUPS),)
    names = list(CLASS_GROUPS)
    assert classes[names.index("count")] == 3 - 1  # classes 0..3 stand for 1..4 shapes
    assert classes[names.index("count_star")] == 2
    assert classes[names.index("count_circle")] == 1
    assert classes[names.index(f"count_{KINDS[1]}")] == 0
    assert classes[names.index("word")] == WORDS.index("cat") + 1  # 0 is "no word"


def pretrain(out, **overrides):
    image = dataclasses.asdict(tiny_config().image)
    values = dict(out=str(out), steps=40, batch_size=8, lr=3e-3, warmup=5, heldout_batches=1)
    return pretrain_image_encoder(ImagePretrainConfig(**{**values, "image": image, **overrides}))


def test_pretraining_lowers_the_loss_and_starts_training_from_its_weights(tmp_path):
    weights = pretrain(tmp_path / "pre")
    report = json.loads((tmp_path / "pre" / "image_pretrain.json").read_text())
    assert report["loss_end"] < 0.8 * report["loss_start"]
    assert set(report["heldout"]) == set(BIT_GROUPS) | set(CLASS_GROUPS)
    pretrained = load_file(weights)
    run = small_run(tmp_path / "run", image_init=str(weights), steps=1, lr=1e-12, warmup=1)
    from mmllm.train.trainer import train

    state = load_file(train(run) / "model.safetensors")
    for name, tensor in pretrained.items():
        assert torch.allclose(state[f"image_encoder.{name}"], tensor, atol=1e-6), name


def test_image_init_with_init_is_refused(tmp_path):
    from mmllm.errors import InputError
    from mmllm.train.trainer import train

    first = train(small_run(tmp_path / "a", steps=1))
    with pytest.raises(InputError, match="give one of the two"):
        train(small_run(tmp_path / "b", init=str(first), image_init="x.safetensors"))


def test_image_init_of_another_size_names_the_mismatch(tmp_path):
    config = tiny_config()
    bigger = dataclasses.replace(config.image, dim=64)
    weights = pretrain(tmp_path, steps=2, image=dataclasses.asdict(bigger))
    with pytest.raises(CheckpointError, match="mis-shaped"):
        load_image_encoder(MultimodalLM(config), str(weights))


def test_the_tiny_recipe_pretrains_the_image_encoder_once(tmp_path, monkeypatch):
    from mmllm.cli import main as cli_main
    from mmllm.train import recipes

    out = tmp_path / "run"
    train = dict(small_run(out, steps=2).__dict__)
    pre = dict(steps=3, batch_size=4, heldout_batches=1)
    monkeypatch.setitem(recipes.RECIPES, "test", recipes.Recipe(image_pretrain=pre, train=train))
    assert cli_main(["train", "--recipe", "test", "--stop-after", "1"]) == 0
    weights = out / "image-pretrain" / WEIGHTS_FILE
    made_at = weights.stat().st_mtime_ns
    assert json.loads((out / "train_config.json").read_text())["image_init"] == str(weights)
    assert cli_main(["train", "--recipe", "test"]) == 0  # resumes; no second pretraining
    assert weights.stat().st_mtime_ns == made_at
