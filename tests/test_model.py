"""Properties of the multimodal model: each test asserts one."""

import pytest
import torch

from mmllm import MediaBatch, MediaLimitError, MultimodalLM
from mmllm.data.collate import IGNORE_INDEX
from mmllm.train.loss import TrainingLoss
from mmllm.weights.checkpoint import load_model, save_checkpoint
from tests.conftest import make_media, open_gates, tiny_config


def training_loss(model, token_ids, media, labels) -> torch.Tensor:
    return TrainingLoss(model)(token_ids, media, labels)["loss"]


@pytest.fixture(params=[False, True], ids=["plain", "qk_norm"])
def config(request):
    """Every property here holds with and without cross-attention QK-norm."""
    return tiny_config(cross_attn_qk_norm=request.param)


def test_logits_shape(model, media, token_ids):
    assert model(token_ids, media).shape == (3, 12, 64)


def test_causality(model, media, token_ids):
    open_gates(model)
    changed = token_ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 5) % 64
    before = model(token_ids, media)[:, :7]
    after = model(changed, media)[:, :7]
    torch.testing.assert_close(before, after)


def test_gates_at_zero_make_media_invisible(model, media, token_ids):
    with_media = model(token_ids, media)
    without = model(token_ids)
    assert torch.equal(with_media, without)


def test_open_gates_make_media_visible(model, media, token_ids):
    open_gates(model)
    assert not torch.allclose(model(token_ids, media)[0], model(token_ids)[0])


def test_media_of_one_sample_never_affects_another(model, token_ids):
    open_gates(model)
    base = model(token_ids, make_media(seed=0))
    other = make_media(seed=0)
    other.pixels[1:] = torch.randn_like(other.pixels[1:])  # only sample 1's images change
    changed = model(token_ids, other)
    torch.testing.assert_close(base[0], changed[0])
    torch.testing.assert_close(base[2], changed[2])
    assert not torch.allclose(base[1], changed[1])


def test_sample_without_media_equals_text_only(model, media, token_ids):
    open_gates(model)
    torch.testing.assert_close(model(token_ids, media)[2], model(token_ids)[2])


def test_kv_cache_prefill_then_steps_equals_full_forward(model, media, token_ids):
    open_gates(model)
    full = model(token_ids, media)
    context = model.prepare_media(media)
    cache = model.decoder.new_cache(3, 16, torch.device("cpu"), torch.float32)
    steps = [model(token_ids[:, :8], context, cache=cache)]
    for t in range(8, 12):
        steps.append(model(token_ids[:, t : t + 1], context, cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_kv_cache_with_left_padding_equals_unpadded_row(model, media, token_ids):
    open_gates(model)
    short = token_ids[:1, 3:]  # row 0 without its first 3 tokens
    alone = model(short, MediaBatch.from_lists([[media.pixels[0]]], [[media.waveform[0]]]))
    padded = token_ids[:1].clone()
    padded[:, :3] = 0
    mask = torch.ones_like(padded, dtype=torch.bool)
    mask[:, :3] = False
    one = MediaBatch.from_lists([[media.pixels[0]]], [[media.waveform[0]]])
    context = model.prepare_media(one)
    cache = model.decoder.new_cache(1, 16, torch.device("cpu"), torch.float32)
    logits = [model(padded[:, :6], context, mask[:, :6], cache=cache)[:, 3:]]
    for t in range(6, 12):
        logits.append(model(padded[:, t : t + 1], context, mask[:, : t + 1], cache=cache))
    torch.testing.assert_close(torch.cat(logits, dim=1), alone, rtol=1e-5, atol=1e-5)


def test_too_many_media_items_is_a_typed_error(model, token_ids):
    many = MediaBatch.from_lists(images=[[torch.randn(3, 32, 32)] * 5])
    with pytest.raises(MediaLimitError, match="at most 4"):
        model(token_ids[:1], many)


def test_every_trainable_parameter_gets_a_gradient(model, media, token_ids):
    open_gates(model)
    model.train()
    training_loss(model, token_ids, media, token_ids).backward()
    no_grad = [
        name
        for name, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert no_grad == []


def test_gates_learn_from_zero(model, media, token_ids):
    model.train()
    training_loss(model, token_ids, media, token_ids).backward()
    gates = [model.decoder.layers[i].cross_attn.gate.grad for i in model.decoder.cross_layers]
    assert all(g is not None and g.abs().item() > 0 for g in gates)


def test_overfit_one_image_audio_text_batch():
    torch.manual_seed(0)
    model = MultimodalLM(tiny_config()).train()
    media = make_media()
    token_ids = torch.randint(4, 64, (3, 12), generator=torch.Generator().manual_seed(1))
    labels = token_ids.clone()
    labels[:, :4] = IGNORE_INDEX  # a prompt without loss, like a question before its answer
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(80):
        loss = training_loss(model, token_ids, media, labels)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1 * first


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_autocast_forward_matches_fp32(model, media, token_ids):
    open_gates(model)
    reference = model(token_ids, media)
    cuda_model = model.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = cuda_model(token_ids.cuda(), media.to("cuda"))
    torch.testing.assert_close(logits.float().cpu(), reference, rtol=0.05, atol=0.05)


def test_gate_init_opens_the_gates_from_the_start(media, token_ids):
    torch.manual_seed(0)
    model = MultimodalLM(tiny_config(gate_init=1.0)).eval()
    gates = [model.decoder.layers[i].cross_attn.gate.item() for i in model.decoder.cross_layers]
    assert gates == [1.0] * len(gates)
    assert not torch.allclose(model(token_ids, media)[0], model(token_ids)[0])


def test_fixed_gates_are_buffers_that_never_train():
    model = MultimodalLM(tiny_config(gate_init=1.0, train_gates=False))
    names = {n for n, _ in model.named_parameters()}
    assert not any(n.endswith("cross_attn.gate") for n in names)
    assert model.state_dict()["decoder.layers.0.cross_attn.gate"].item() == 1.0


def with_media_extras(image_positions: bool = True, null_tokens: int = 2) -> MultimodalLM:
    import dataclasses

    config = tiny_config()
    projector = dataclasses.replace(
        config.projector, image_positions=image_positions, null_tokens=null_tokens
    )
    torch.manual_seed(0)
    return open_gates(MultimodalLM(dataclasses.replace(config, projector=projector)).eval())


def test_null_tokens_join_every_sample_with_media_and_no_other(media):
    model = with_media_extras(image_positions=False, null_tokens=2)
    plain, plain_mask = open_gates(MultimodalLM(tiny_config()).eval()).encode_media(media)
    packed, mask = model.encode_media(media)
    assert mask.sum(1).tolist() == [n + 2 if n else 0 for n in plain_mask.sum(1).tolist()]
    assert packed.shape[1] == plain.shape[1] + 2


def test_image_positions_tell_identical_patches_apart(token_ids):
    from mmllm.model.media import IMAGE

    model = with_media_extras(image_positions=True, null_tokens=0)
    n = model.config.image.n_tokens
    same = torch.ones(1, n, model.config.decoder.dim)  # every patch the same token
    mask = torch.ones(1, n, dtype=torch.bool)
    packed, _ = model.media_packer([(IMAGE, same, mask, torch.tensor([0]))], 1)
    assert packed[0].std(0).abs().sum() > 0  # positions make them differ
    no_positions = with_media_extras(image_positions=False, null_tokens=0)
    packed, _ = no_positions.media_packer([(IMAGE, same, mask, torch.tensor([0]))], 1)
    assert packed[0].std(0).abs().sum() == 0
    assert "media_packer.image_positions" not in no_positions.state_dict()  # old checkpoints


def test_media_extras_keep_rows_without_media_equal_to_text_only(media, token_ids):
    model = with_media_extras()
    torch.testing.assert_close(model(token_ids, media)[2], model(token_ids)[2])


def test_media_extras_survive_a_checkpoint(tmp_path, media, token_ids):

    model = with_media_extras()
    save_checkpoint(model, tmp_path / "ck")
    loaded = load_model(tmp_path / "ck").eval()
    assert loaded.config.projector == model.config.projector
    torch.testing.assert_close(loaded(token_ids, media), model(token_ids, media))


def test_projected_image_positions_add_a_fixed_table_that_the_config_rebuilds(
    tmp_path, media, token_ids
):
    from mmllm.config import with_position_tables
    from mmllm.model.media import IMAGE

    torch.manual_seed(0)
    base = open_gates(MultimodalLM(tiny_config()).eval())
    keys, plain = set(base.state_dict()), base(token_ids, media)
    model = MultimodalLM(with_position_tables(tiny_config(), projected=2.0)).eval()
    model.load_state_dict(base.state_dict())  # the table adds no weights
    table = model.media_packer.fixed_image_positions  # (N_img, D): one row per token
    n = model.config.image.n_tokens
    assert table.shape == (n, model.config.decoder.dim) and table.abs().max() == 2.0
    assert torch.cdist(table, table).triu(1).gt(0.1).sum() == n * (n - 1) // 2
    same = torch.ones(1, n, model.config.decoder.dim)  # every token the same: now told apart
    packed, _ = model.media_packer(
        [(IMAGE, same, torch.ones(1, n, dtype=torch.bool), torch.tensor([0]))], 1
    )
    torch.testing.assert_close(packed[0] - packed[0, :1], table - table[:1])
    moved = model(token_ids, media)
    assert not torch.allclose(moved[0], plain[0], atol=1e-4)  # rows with images change
    torch.testing.assert_close(moved[2], plain[2])  # the row without media does not
    assert set(model.state_dict()) == keys  # never saved: rebuilt from the config
    save_checkpoint(model, tmp_path / "ck")
    loaded = load_model(tmp_path / "ck").eval()
    assert loaded.config.projector.fixed_image_positions == 2.0
    torch.testing.assert_close(loaded(token_ids, media), moved)
    without = load_model(tmp_path / "ck", config=with_position_tables(loaded.config, projected=0))
    torch.testing.assert_close(without.eval()(token_ids, media), plain)


def test_projected_image_positions_need_the_mlp_projector_and_a_scale_of_at_least_0():
    import dataclasses

    from mmllm import InputError
    from mmllm.config import ProjectorConfig, with_position_tables
    from mmllm.errors import ConfigError

    with pytest.raises(ConfigError, match="fixed_image_positions"):
        ProjectorConfig(kind="resampler", fixed_image_positions=1.0)
    with pytest.raises(InputError, match=">= 0"):
        with_position_tables(tiny_config(), projected=-1.0)
    resampled = tiny_config()
    resampled = dataclasses.replace(
        resampled, projector=dataclasses.replace(resampled.projector, kind="resampler")
    )
    with pytest.raises(InputError, match="'mlp' projector"):
        with_position_tables(resampled, projected=1.0)


def test_qk_norm_keys_follow_the_direction_of_the_media_not_their_scale(media):
    torch.manual_seed(0)
    model = MultimodalLM(tiny_config(cross_attn_qk_norm=True)).eval()
    cross = model.decoder.layers[0].cross_attn
    tokens = 10 * torch.randn(2, 5, model.config.decoder.dim)  # keys well above the norm eps
    keys, values = cross.media_kv(tokens)
    big_keys, big_values = cross.media_kv(100 * tokens)
    torch.testing.assert_close(big_keys, keys, rtol=1e-4, atol=1e-4)  # normalised: same keys
    torch.testing.assert_close(big_values, 100 * values, rtol=1e-4, atol=1e-3)  # values: scaled
    rms = keys.pow(2).mean(-1).sqrt()  # (B, H_kv, N): the gains start at 1
    torch.testing.assert_close(rms, torch.ones_like(rms), rtol=1e-3, atol=1e-3)
    plain = MultimodalLM(tiny_config()).decoder.layers[0].cross_attn
    assert plain.q_norm is None and plain.k_norm is None
