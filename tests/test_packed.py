"""The packed eager path (``mmllm.packed``): the modules' numbers, with fewer and larger ops."""

import pytest
import torch
import torch.nn.functional as F
from conftest import make_media, randomize, tiny_config
from torch import nn

import mmllm.generate as generate
import mmllm.packed as packed
from mmllm import MultimodalLM
from mmllm.generate import SamplingConfig, generate_ids, left_pad, start_decode
from mmllm.model.lora import LoRAConfig, add_lora
from mmllm.packed import PackedLinear, pack_linears, packed_for
from mmllm.quantize import quantize
from mmllm.tokenizer import StopTokens

VARIANTS = {
    "grouped-query, cross-attention every 2nd layer": {},
    "multi-head, cross-attention everywhere, untied head": dict(
        n_kv_heads=4, cross_attn_every=1, tie_embeddings=False
    ),
    "q/k/v biases, no query-key norm": dict(attn_bias=True, cross_attn_qk_norm=False),
}


def _model(**decoder) -> MultimodalLM:
    torch.manual_seed(0)
    return randomize(MultimodalLM(tiny_config(**decoder)))


def _ragged_prompts() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(4, 64, (n,), generator=g).tolist() for n in (7, 3, 5)]
    return left_pad(prompts, pad_id=0)


@pytest.fixture(params=[False, True], ids=["plain GEMM", "oneDNN for every product"])
def onednn_everywhere(request, monkeypatch):
    if request.param:
        if not packed.onednn_available():
            pytest.skip("this PyTorch has no oneDNN prepacked linear")
        monkeypatch.setattr(packed, "ONEDNN_MIN_MACS", 1)
    return request.param


@pytest.mark.parametrize("decoder", VARIANTS.values(), ids=VARIANTS.keys())
def test_packed_steps_give_the_modules_logits(decoder, onednn_everywhere):
    model = _model(**decoder)
    with torch.inference_mode():
        _check_steps(model)


def _check_steps(model: MultimodalLM) -> None:
    token_ids, mask = _ragged_prompts()  # left padding: per-row positions and a key mask
    context = model.prepare_media(make_media())  # a row without media: `keep` zeroes it
    assert not context.all_rows
    steps = torch.randint(4, 64, (3, 6), generator=torch.Generator().manual_seed(4))
    runs = []
    for use_packed in (False, True):
        cache, full_mask = start_decode(model, mask, steps.shape[1])
        T = token_ids.shape[1]
        model.decoder.hidden(token_ids, context, full_mask[:, :T], cache=cache)
        step_packed = packed_for(model.decoder)
        out = []
        for i in range(steps.shape[1]):
            step_mask = full_mask[:, : T + i + 1]
            if use_packed:
                positions = mask.sum(1) + i
                logits, _ = step_packed.step(steps[:, i], positions, cache, step_mask, context)
            else:
                logits = model.decoder(steps[:, i : i + 1], context, step_mask, cache=cache)[:, -1]
            out.append(logits)
        runs.append(torch.stack(out, 1))
    assert (runs[0] - runs[1]).abs().max() < 1e-4


@pytest.mark.parametrize("decoder", VARIANTS.values(), ids=VARIANTS.keys())
def test_packed_greedy_ids_equal_the_modules(decoder, monkeypatch):
    model = _model(**decoder)
    token_ids, mask = _ragged_prompts()
    context = model.prepare_media(make_media())
    sampling = SamplingConfig(max_new_tokens=12, repetition_guard=False)
    stops = StopTokens(eos=1, pad=0)
    got = generate_ids(model, token_ids, mask, context, sampling, stops)
    monkeypatch.setattr(generate, "packed_for", lambda decoder: None)
    want = generate_ids(model, token_ids, mask, context, sampling, stops)
    assert torch.equal(got, want)
    assert len({tuple(row) for row in got.tolist()}) > 1


def test_packed_weights_follow_the_model_and_stay_out_of_training():
    model = _model()
    decoder = model.decoder
    with torch.inference_mode():
        first = packed_for(decoder)
        assert first is not None and packed_for(decoder) is first  # built once
    with torch.no_grad():
        decoder.layers[0].self_attn.q_proj.weight.mul_(2)  # an update in place
    with torch.inference_mode():
        assert packed_for(decoder) is not first  # rebuilt from the new weights
    assert packed_for(decoder) is None  # gradients on: the modules, for autograd
    with torch.inference_mode():
        assert packed_for(decoder.train()) is None
        decoder.eval()
        assert packed_for(quantize(_model(), "int8").decoder) is None
        lora = _model()
        add_lora(lora.decoder, LoRAConfig(rank=2))
        assert packed_for(lora.eval().decoder) is None


def test_packed_linear_is_a_linear_with_the_same_numbers_and_state(onednn_everywhere):
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 16, bias=False))
    model = pack_linears(nn.Sequential(*plain)).eval()  # the same parameter objects
    assert all(type(m) is PackedLinear for m in (model[0], model[2]))
    assert list(model.state_dict()) == list(plain.state_dict())
    assert model[0].weight is plain[0].weight
    x = torch.randn(5, 7, 32)
    with torch.inference_mode():
        assert (model(x) - plain(x)).abs().max() < 1e-5
        with torch.no_grad():
            model[0].weight.mul_(-1)  # a changed weight is packed again
        assert (model(x) - plain(x)).abs().max() < 1e-5
    y = model.train()(x)  # training: plain F.linear, with gradients
    y.sum().backward()
    assert model[0].weight.grad is not None
    assert torch.equal(y, F.linear(F.gelu(F.linear(x, *plain[0].parameters())), plain[2].weight))


def test_media_attention_bias_masks_as_the_bool_mask_and_is_none_without_padding():
    model = _model()
    context = model.prepare_media(make_media())  # row 0's media are padded
    bias = context.attention_bias()
    assert bias is context.attention_bias()  # made once
    assert torch.equal(bias == float("-inf"), ~context.attn_mask)
    assert torch.equal(bias[context.attn_mask], torch.zeros(int(context.attn_mask.sum())))
    every_key_real = context.select(torch.tensor([1, 2]))
    assert every_key_real.attn_mask.all() and every_key_real.attention_bias() is None
