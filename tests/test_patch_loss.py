"""Per-token image targets during the main training (``mmllm train --patch-weight``)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mmllm import MultimodalLM
from mmllm.data.collate import Collator, Record
from mmllm.data.sources import SyntheticSource
from mmllm.errors import CheckpointError, ConfigError
from mmllm.processing import MediaProcessor
from mmllm.tokenizer import Tokenizer
from mmllm.train.image_pretrain import IGNORE, PATCH_GROUPS, patch_targets
from mmllm.train.patch_loss import HEAD_FILE, image_targets, token_grid
from mmllm.train.trainer import train
from tests.conftest import tiny_config
from tests.test_train import small_run, weights


def test_a_batch_carries_each_synthetic_image_s_targets_in_pixel_order():
    config = tiny_config()
    source = SyntheticSource("train", seed=0)
    records = [source[i] for i in range(12)]
    plain = Record("describe the image:", "a picture", images=[Image.new("RGB", (32, 32))])
    records.insert(3, plain)  # an image without ground truth
    tokenizer = Tokenizer.train([r.prompt + " " + r.target for r in records], vocab_size=300)
    grid = token_grid(MultimodalLM(config))
    collator = Collator(
        tokenizer,
        MediaProcessor(config.image, config.audio, truncate_audio=True),
        max_len=48,
        image_targets=lambda scenes: image_targets(scenes, grid),
    )
    batch = collator(records)
    with_images = [r for r in records if r.images]
    assert any(not r.images for r in records)  # audio-only records add no row
    assert batch.patch_targets.shape == (len(with_images), grid * grid, len(PATCH_GROUPS))
    assert batch.media.pixels.shape[0] == len(with_images)
    for row, record in zip(batch.patch_targets, with_images, strict=True):
        if record is plain:
            assert (row == IGNORE).all()
        else:
            assert torch.equal(row, patch_targets(record.scenes[0], grid))
    assert batch.to("cpu").patch_targets is not None


def test_patch_loss_resumes_exactly_and_learns(tmp_path):
    run = dict(steps=20, patch_weight=1.0)
    straight = train(small_run(tmp_path / "a", **run))
    train(small_run(tmp_path / "b", stop_after=10, **run))
    resumed = train(small_run(tmp_path / "b", **run))
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    head_a, head_b = load_file(straight / HEAD_FILE), load_file(resumed / HEAD_FILE)
    assert all(torch.equal(head_a[k], head_b[k]) for k in head_a)
    # the shipped part is the model alone: it loads without the head
    assert isinstance(MultimodalLM.from_pretrained(straight), MultimodalLM)
    rows = [json.loads(x) for x in (tmp_path / "a/metrics.jsonl").open()]
    patch = [r["patch_loss"] for r in rows if "patch_loss" in r]
    assert len(patch) == 20 and all(0 < p < r["loss"] for p, r in zip(patch, rows, strict=False))
    assert np.mean(patch[-5:]) < 0.8 * np.mean(patch[:5])


def test_patch_loss_changes_training_and_zero_weight_saves_no_head(tmp_path):
    without = train(small_run(tmp_path / "a", steps=3))
    with_head = train(small_run(tmp_path / "b", steps=3, patch_weight=1.0))
    assert not (without / HEAD_FILE).exists()
    a, b = weights(without), weights(with_head)
    assert not torch.equal(a["image_projector.fc1.weight"], b["image_projector.fc1.weight"])


def test_resuming_without_the_head_is_a_clear_error(tmp_path):
    train(small_run(tmp_path, steps=4, stop_after=2))
    with pytest.raises(CheckpointError, match="without patch_weight"):
        train(small_run(tmp_path, steps=4, patch_weight=1.0))


def test_patch_loss_needs_one_token_per_patch():
    with pytest.raises(ConfigError, match="one projected token per patch"):
        token_grid(MultimodalLM(tiny_config(projector="resampler")))
    odd = tiny_config()
    odd = dataclasses.replace(odd, image=dataclasses.replace(odd.image, image_size=24))
    with pytest.raises(ConfigError, match="does not tile"):
        token_grid(MultimodalLM(odd))
