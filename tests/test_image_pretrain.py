"""Image encoder pretraining on scene graphs, and its weights as the start of `mmllm train`."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from mmllm import MultimodalLM
from mmllm.data.synthetic_image import (
    COLORS,
    KINDS,
    SIZES,
    WORD_LABEL,
    WORDS,
    Scene,
    Shape,
    label_map,
)
from mmllm.errors import CheckpointError
from mmllm.train.image_pretrain import (
    BIT_GROUPS,
    CLASS_GROUPS,
    IGNORE,
    PAIRS,
    PATCH_GROUPS,
    POSITION_BINS,
    SIDES,
    WEIGHTS_FILE,
    ImagePretrainConfig,
    patch_targets,
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


def test_patch_targets_say_what_each_patch_shows():
    # a large red circle in the top-left quarter, a small blue star bottom-right, a word below
    circle = Shape("circle", "red", "large", 0.25, 0.25)
    star = Shape("star", "blue", "small", 0.75, 0.6)
    scene = Scene((circle, star), "plain", "cat", (0.5, 0.86))
    labels = label_map(scene)
    assert labels.shape == (128, 128)
    assert labels[32, 32] == 1 and labels[77, 96] == 2 and labels[5, 120] == 0
    assert (labels == WORD_LABEL).sum() > 0
    grid = 8
    targets = patch_targets(scene, grid).view(grid, grid, len(PATCH_GROUPS))
    groups = list(PATCH_GROUPS)
    color, kind, size, word, x, y = (targets[..., groups.index(g)] for g in groups)
    # the patch at the circle's centre (pixel 32, 32 of 128: patch row 2, column 2)
    assert color[2, 2] == list(COLORS).index("red") + 1
    assert kind[2, 2] == KINDS.index("circle") + 1
    assert size[2, 2] == SIZES.index("large") + 1
    assert (x[2, 2], y[2, 2]) == (int(0.25 * POSITION_BINS), int(0.25 * POSITION_BINS))
    # every patch of the circle names the circle's centre, not its own place
    on_circle = kind == KINDS.index("circle") + 1
    assert on_circle.sum() >= 4 and (x[on_circle] == 2).all() and (y[on_circle] == 2).all()
    # the star's centre patch (pixel 96, 77: row 4, column 6)
    assert kind[4, 6] == KINDS.index("star") + 1 and color[4, 6] == list(COLORS).index("blue") + 1
    assert (x[4, 6], y[4, 6]) == (6, 4)
    # the word's patches name the word and no shape; corners are background
    assert (word == WORDS.index("cat") + 1).sum() >= 4
    assert (kind[word > 0] == 0).all() and (x[word > 0] == IGNORE).all()
    assert targets[0, 7].tolist() == [0, 0, 0, 0, IGNORE, IGNORE]
    # a 7x7 grid (a CNN's stride-32 cells) does not tile 128 px: the scene is read at 133 px,
    # where the star's centre (pixel 99.8, 80.0) is cell row 4, column 5
    seven = patch_targets(scene, 7).view(7, 7, len(PATCH_GROUPS))
    assert seven[4, 5, groups.index("kind")] == KINDS.index("star") + 1
    assert seven[1, 1, groups.index("kind")] == KINDS.index("circle") + 1
    assert (seven[..., groups.index("word")] == WORDS.index("cat") + 1).sum() >= 2


def pretrain(out, **overrides):
    image = dataclasses.asdict(tiny_config().image)
    values = dict(out=str(out), steps=40, batch_size=8, lr=3e-3, warmup=5, heldout_batches=1)
    return pretrain_image_encoder(ImagePretrainConfig(**{**values, "image": image, **overrides}))


def test_pretraining_lowers_the_loss_and_starts_training_from_its_weights(tmp_path):
    weights = pretrain(tmp_path / "pre")
    report = json.loads((tmp_path / "pre" / "image_pretrain.json").read_text())
    assert report["loss_end"] < 0.8 * report["loss_start"]
    patch_scores = {f"patch_{g}" for g in PATCH_GROUPS}
    assert set(report["heldout"]) == set(BIT_GROUPS) | set(CLASS_GROUPS) | patch_scores
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


def test_a_three_stage_recipe_trains_each_stage_from_the_last_and_resumes_the_latest(
    tmp_path, monkeypatch
):
    from mmllm.cli import main as cli_main
    from mmllm.train import recipes

    out = tmp_path / "run"
    first = dict(small_run(out, steps=2).__dict__)
    del first["out"]
    second = dict(steps=2, lr=1e-3, warmup=1, seed=2, batch_size=2, heldout=None)
    last = dict(out=str(out), steps=3, lr=1e-12, warmup=1, seed=3, batch_size=2, heldout=None)
    pre = dict(steps=3, batch_size=4, heldout_batches=1)
    recipe = recipes.Recipe(image_pretrain=pre, stages=(first, second), train=last)
    monkeypatch.setitem(recipes.RECIPES, "test", recipe)
    assert cli_main(["train", "--recipe", "test", "--stop-after", "1"]) == 0
    stage1, stage2 = recipes.stage_dirs(out)
    assert (stage1.name, stage2.name) == ("stage1", "stage2")
    weights = out / "image-pretrain" / WEIGHTS_FILE
    assert json.loads((stage1 / "train_config.json").read_text())["image_init"] == str(weights)
    assert json.loads((stage2 / "train_config.json").read_text())["init"] == str(
        stage1 / "checkpoint"
    )
    config = json.loads((out / "train_config.json").read_text())
    assert config["init"] == str(stage2 / "checkpoint") and config["image_init"] is None
    for stage in (stage1, stage2):
        state = json.loads((stage / "checkpoint" / "train_state.json").read_text())
        assert state["info"]["step"] == 2
    # stage 2 trained (lr 1e-3); lr 1e-12: the last stage's first step leaves stage 2's weights
    start = load_file(stage2 / "checkpoint" / "model.safetensors")
    before = load_file(stage1 / "checkpoint" / "model.safetensors")
    assert any(not torch.allclose(start[k], v) for k, v in before.items())
    after = load_file(out / "checkpoint" / "model.safetensors")
    assert all(torch.allclose(after[k], v, atol=1e-6) for k, v in start.items())
    made = [(s / "checkpoint" / "model.safetensors").stat().st_mtime_ns for s in (stage1, stage2)]
    assert cli_main(["train", "--recipe", "test"]) == 0  # resumes the last stage only
    assert [
        (s / "checkpoint" / "model.safetensors").stat().st_mtime_ns for s in (stage1, stage2)
    ] == made
    assert json.loads((out / "checkpoint" / "train_state.json").read_text())["info"]["step"] == 3


def test_a_recipe_stopped_in_a_middle_stage_resumes_it_and_leaves_the_first_alone(
    tmp_path, monkeypatch
):
    from mmllm.train import recipes
    from mmllm.train.trainer import TrainConfig, train

    out = tmp_path / "run"
    first = dict(small_run(out, steps=2).__dict__)
    del first["out"]
    second = dict(steps=4, lr=1e-3, warmup=1, seed=2, batch_size=2, heldout=None)
    last = dict(out=str(out), steps=1, lr=1e-3, warmup=1, seed=3, batch_size=2, heldout=None)
    recipe = recipes.Recipe(stages=(first, second), train=last)
    monkeypatch.setitem(recipes.RECIPES, "test", recipe)
    stage1, stage2 = recipes.stage_dirs(out, 2)
    train(TrainConfig(**{**first, "out": str(stage1)}))
    made = (stage1 / "checkpoint" / "model.safetensors").stat().st_mtime_ns
    init = str(stage1 / "checkpoint")
    train(TrainConfig(**{**second, "out": str(stage2), "init": init, "stop_after": 2}))
    values = recipes.prepare_recipe("test", {})
    assert values["init"] == str(stage2 / "checkpoint")
    assert json.loads((stage2 / "checkpoint" / "train_state.json").read_text())["info"]["step"] == 4
    assert (stage1 / "checkpoint" / "model.safetensors").stat().st_mtime_ns == made


def test_patch_weight_zero_is_the_pooled_loss_alone():
    from mmllm.train.image_pretrain import SceneBatches, SceneHead, scene_loss

    torch.manual_seed(0)
    config = tiny_config().image
    _, bits, classes, patches = SceneBatches(config, 4, seed=0, split="train")[0]
    assert patches.shape == (4, config.n_tokens, len(PATCH_GROUPS))
    head = SceneHead(8)
    tokens = torch.randn(4, config.n_tokens, 8)
    pooled = scene_loss(head(tokens), bits, classes, patches, patch_weight=0)
    pooled.backward()
    assert head.patches.weight.grad is None
    both = scene_loss(head(tokens), bits, classes, patches, patch_weight=1)
    assert both > pooled  # the per-token cross-entropy is positive
