"""The main training's image losses (``mmllm train --patch-weight / --attend-weight``)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mmllm import MultimodalLM
from mmllm.data.collate import Collator, Record, TrainBatch
from mmllm.data.sources import SyntheticSource, build_source
from mmllm.errors import CheckpointError, ConfigError
from mmllm.processing import MediaProcessor
from mmllm.tokenizer import Tokenizer
from mmllm.train.aux_losses import (
    HEAD_FILE,
    NAMED,
    TARGET_GROUPS,
    PatchHead,
    image_targets,
    token_grid,
)
from mmllm.train.image_pretrain import IGNORE, PATCH_GROUPS, patch_shapes, patch_targets
from mmllm.train.loss import TrainingLoss
from mmllm.train.trainer import train
from mmllm.weights.checkpoint import load_model
from tests.conftest import flat_grads, tiny_config
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
        image_targets=lambda scenes, referents: image_targets(scenes, referents, grid),
    )
    batch = collator(records)
    with_images = [r for r in records if r.images]
    assert any(not r.images for r in records)  # audio-only records add no row
    assert batch.patch_targets.shape == (len(with_images), grid * grid, len(TARGET_GROUPS) + 1)
    assert batch.media.pixels.shape[0] == len(with_images)
    named = kind_counts = 0
    for row, record in zip(batch.patch_targets, with_images, strict=True):
        if record is plain:
            assert (row == IGNORE).all()
            continue
        scene, referents = record.scenes[0], record.referents[0]
        assert torch.equal(row[:, : len(PATCH_GROUPS)], patch_targets(scene, grid))
        shows = patch_shapes(scene, grid) - 1  # -1: the background; the word: n_shapes
        kinds = [s.kind for s in scene.shapes] + [None]  # the word shows no kind
        counts = [kinds.count(kinds[s]) if s >= 0 and kinds[s] else 0 for s in shows]
        assert row[:, list(TARGET_GROUPS).index("kind_count")].tolist() == counts
        kind_counts += sum(c > 1 for c in counts)
        group_of = {i: g for g, group in enumerate(referents, start=1) for i in group}
        expected = torch.tensor([group_of.get(int(s), 0) for s in shows])
        if not referents or set(range(1, len(referents) + 1)) - set(expected.tolist()):
            expected = torch.full_like(expected, IGNORE)
        named += int(expected[0] != IGNORE)
        assert torch.equal(row[:, NAMED], expected)
    assert named > 0 and kind_counts > 0  # some patch's kind is in the picture twice
    assert batch.to("cpu").patch_targets is not None


def synthetic_batch(
    model: MultimodalLM, spec: str, n: int = 24, extra: tuple[Record, ...] = ()
) -> tuple[list[Record], TrainBatch]:
    """``n`` records of the synthetic data ``spec`` (32-px images), then ``extra``, and their
    batch with image targets, through a small tokenizer trained on them."""
    source = build_source(spec, image_size=32)
    records = [source[i] for i in range(n)] + list(extra)
    tokenizer = Tokenizer.train([r.prompt + " " + r.target for r in records], vocab_size=300)
    grid, config = token_grid(model), model.config
    processor = MediaProcessor(config.image, config.audio, truncate_audio=True)
    collator = Collator(tokenizer, processor, 48, lambda s, r: image_targets(s, r, grid))
    return records, collator(records)


def test_attend_loss_is_minus_log_the_attention_share_on_the_named_shapes():
    torch.manual_seed(0)
    config = tiny_config(vocab_size=320)
    model = MultimodalLM(config).eval()
    with torch.no_grad():  # sharper attention: heads that differ, so log-of-mean != mean-of-log
        for layer in model.decoder.layers:
            if hasattr(layer, "cross_attn"):
                layer.cross_attn.q_proj.weight.mul_(30.0)
    only_images = "image_vqa=1&audio_vqa=0&both_vqa=0&image_caption=0&audio_caption=0"
    records, batch = synthetic_batch(model, f"synthetic:train?{only_images}")
    grid = token_grid(model)
    maps = []  # every cross-attention layer's full weights (B, H, T, N)
    hooks = [
        layer.cross_attn.register_forward_hook(
            lambda m, a, _o: maps.append(m.attention_weights(*a))
        )
        for layer in model.decoder.layers
        if hasattr(layer, "cross_attn")
    ]
    wrapped = TrainingLoss(
        model, head=PatchHead(config.decoder.dim), patch_weight=0.0, attend_weight=1.0
    )
    with torch.no_grad():
        losses = wrapped(batch.token_ids, batch.media, batch.labels, batch.patch_targets)
    for hook in hooks:
        hook.remove()
    assert all(len(r.images) == 1 for r in records)  # image row b is sample b
    logs, relations = [], 0
    for b in range(len(records)):
        named = batch.patch_targets[b, :, NAMED]
        if named[0] == IGNORE:
            continue
        answer = int((batch.labels[b] != -100).nonzero()[0]) - 1  # predicts the answer's start
        two = bool((named == 2).any())  # a relation: the second half of the heads on group 2
        relations += two
        for layer_weights in maps:
            heads = layer_weights[b, :, answer, : grid * grid]  # (H, N)
            half = len(heads) // 2
            for h, head in enumerate(heads):  # each head's own share, its own log
                group = 2 if two and h >= half else 1
                logs.append(-head[named == group].sum().clamp_min(1e-6).log())
    assert len(logs) >= len(maps) * 4 * maps[0].shape[1] and relations  # several name shapes
    assert float(losses["attend"]) == pytest.approx(float(torch.stack(logs).mean()), rel=1e-5)


def in_groups(wrapped: TrainingLoss, batch: TrainBatch, groups: int) -> dict:
    """``wrapped``'s losses on ``batch``, its rows run through the decoder in ``groups``
    length groups."""
    wrapped.length_groups = groups
    return wrapped(batch.token_ids, batch.media, batch.labels, batch.patch_targets)


def test_a_length_group_without_named_questions_and_with_fewer_media_tokens_is_skipped():
    """A group of rows whose media are fewer tokens than an image (a short clip alone) holds
    no named question: the attend loss skips it (it once failed to join the groups' weights)."""
    torch.manual_seed(0)
    config = tiny_config(vocab_size=320)
    model = MultimodalLM(config).train()
    clip = np.zeros(1600, dtype=np.float32)  # 0.1 s of silence
    assert config.audio.n_tokens(len(clip)) < config.image.n_tokens
    short = Record("describe the sound:", "silence, a long quiet pause", audio=[clip])
    only_images = "image_vqa=1&audio_vqa=0&both_vqa=0&image_caption=0&audio_caption=0"
    records, batch = synthetic_batch(model, f"synthetic:train?{only_images}", 8, (short,))
    wrapped = TrainingLoss(
        model, head=PatchHead(config.decoder.dim), patch_weight=0.5, attend_weight=1.0
    )
    attend = []
    for groups in (1, len(records)):  # then the clip's row is a group of its own
        attend.append(float(in_groups(wrapped, batch, groups)["attend"]))
    assert attend[0] > 0 and attend[1] == pytest.approx(attend[0], rel=1e-5)


def test_length_groups_give_the_same_losses_and_gradients_with_the_image_losses():
    torch.manual_seed(0)
    config = tiny_config(vocab_size=320)
    model = MultimodalLM(config).train()
    _, batch = synthetic_batch(model, "synthetic:train")  # images, sounds, both, captions
    wrapped = TrainingLoss(
        model, head=PatchHead(config.decoder.dim), patch_weight=0.5, attend_weight=1.0
    )
    results = []
    for groups in (1, 3):
        wrapped.zero_grad()
        losses = in_groups(wrapped, batch, groups)
        losses["loss"].backward()
        results.append((losses["loss"].detach(), float(losses["attend"]), flat_grads(wrapped)))
    (loss1, attend1, grads1), (loss3, attend3, grads3) = results
    assert attend1 > 0
    assert attend3 == pytest.approx(attend1, rel=1e-5)
    torch.testing.assert_close(loss3, loss1)
    torch.testing.assert_close(grads3, grads1, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize(
    "losses", [dict(patch_weight=1.0), dict(attend_weight=1.0, batch_size=8, steps=30)]
)
def test_patch_and_attend_losses_resume_exactly_and_learn(tmp_path, losses):
    run = dict(steps=20) | losses
    straight = train(small_run(tmp_path / "a", **run))
    train(small_run(tmp_path / "b", stop_after=10, **run))
    resumed = train(small_run(tmp_path / "b", **run))
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    head_a, head_b = load_file(straight / HEAD_FILE), load_file(resumed / HEAD_FILE)
    assert all(torch.equal(head_a[k], head_b[k]) for k in head_a)
    # the shipped part is the model alone: it loads without the head
    assert isinstance(load_model(straight), MultimodalLM)
    rows = [json.loads(x) for x in (tmp_path / "a/metrics.jsonl").open()]
    name = "patch_loss" if "patch_weight" in losses else "attend_loss"
    logged = [(r[name], r["loss"]) for r in rows if name in r]
    assert len(logged) == run["steps"] and all(0 <= p < total for p, total in logged)
    values = [p for p, _ in logged if p > 0]  # 0: no such target in that batch
    assert len(values) >= 0.8 * run["steps"]
    assert np.mean(values[-5:]) < 0.8 * np.mean(values[:5])


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


def test_a_head_saved_with_other_targets_is_a_clear_error(tmp_path):
    from mmllm.train.aux_losses import load_head, save_head

    save_head(PatchHead(16), tmp_path)  # another width: as if saved with other targets
    with pytest.raises(CheckpointError, match="does not fit this version's patch head"):
        load_head(PatchHead(32), tmp_path)


def test_patch_loss_needs_one_token_per_patch():
    with pytest.raises(ConfigError, match="one projected token per patch"):
        token_grid(MultimodalLM(tiny_config(projector="resampler")))
    odd = tiny_config()
    odd = dataclasses.replace(odd, image=dataclasses.replace(odd.image, image_size=24))
    assert token_grid(MultimodalLM(odd)) == 24 // odd.image.patch_size  # need not tile 128 px
