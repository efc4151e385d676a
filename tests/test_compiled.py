"""Compiled decoding (``mmllm.compiled``): the same tokens as eager decoding, compiled once."""

import os
import shutil

import pytest
import torch

import mmllm
from mmllm import ConfigError, GenerationError
from mmllm.compiled import (
    CACHE_BUCKET,
    PROMPT_BUCKET,
    CompiledModel,
    bucketed,
    check_compiler,
    has_compiler,
    stdin_kept,
    tensor_shape,
)
from mmllm.config import DecoderConfig
from mmllm.data.sources import SyntheticSource
from mmllm.generate import SamplingConfig, start_decode
from mmllm.model.cache import KVCache
from mmllm.model.decoder import Decoder

needs_compiler = pytest.mark.skipif(
    not has_compiler(), reason="torch.compile on the CPU needs a C++ compiler"
)


@pytest.fixture(scope="module")
def records():
    source = SyntheticSource("heldout", seed=1, image_size=32)
    return [source[i] for i in range(4)]


@needs_compiler
def test_compiled_greedy_equals_eager_and_compiles_once_per_shape(tiny_checkpoint, records):
    eager = mmllm.load(tiny_checkpoint, device="cpu")
    compiled = mmllm.load(tiny_checkpoint, device="cpu")
    # inductor's default settings: the same fixed-shape step, compiled faster than max-autotune
    compiled.compiled = CompiledModel(compiled.model, options={})
    compiled.compiled.decoding.cache_bucket = 8  # a cache shorter than the context
    prompts = [r.prompt + " please" * i for i, r in enumerate(records)]  # ragged: left padding
    images = [r.images for r in records]
    audio = [r.audio if i % 2 else [] for i, r in enumerate(records)]  # some rows without audio
    sampling = SamplingConfig(max_new_tokens=10)
    torch._dynamo.reset()
    want = eager.generate_batch(prompts, images, audio, sampling)
    got = compiled.generate_batch(prompts, images, audio, sampling)
    assert got == want
    assert len(set(got)) > 1  # the rows really differ
    decoding = compiled.compiled.decoding
    # the prompt pass, the decode step and the image encoder all ran compiled
    assert decoding.prompt_step.shapes and decoding.step.shapes
    assert compiled.compiled.images.compiled.shapes
    context = compiled.model.config.decoder.max_seq_len
    assert all(key[2][0][2] < context for key in decoding.step.shapes)  # the cache's length
    frames = torch._dynamo.utils.counters["frames"]["ok"]
    assert (
        compiled.generate_batch(prompts, images, audio, sampling) == want
    )  # the same shapes again
    assert torch._dynamo.utils.counters["frames"]["ok"] == frames  # ...reuse the compiled step
    text = ["Say something.", "Name a colour, please."]  # text only: a step without media
    none = [[], []]
    assert compiled.generate_batch(text, none, none, sampling) == eager.generate_batch(
        text, none, none, sampling
    )


def test_a_non_contiguous_input_is_a_new_compiled_shape():
    pixels = torch.zeros(2, 3, 8, 8)
    permuted = torch.zeros(2, 8, 8, 3).permute(0, 3, 1, 2)  # channels last, same shape
    assert pixels.shape == permuted.shape
    assert tensor_shape(pixels) != tensor_shape(permuted)  # compiled anew, with freezing
    assert tensor_shape(pixels) == tensor_shape(torch.ones(2, 3, 8, 8))


def test_compile_without_a_compiler_is_a_config_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        check_compiler(torch.device("cpu"))
    check_compiler(torch.device("meta"))  # only the CPU backend compiles C++


def test_compile_and_quantize_do_not_combine(tiny_checkpoint):
    with pytest.raises(ConfigError, match="compile and quantize"):
        mmllm.load(tiny_checkpoint, device="cpu", quantize="int8", compile=True)


def test_stdin_is_put_back_when_closed_or_replaced_inside():
    original = os.dup(0)
    read_end, write_end = os.pipe()
    try:
        os.dup2(read_end, 0)
        pipe = os.fstat(0).st_ino
        with stdin_kept():
            os.close(0)  # what compiling does
        assert os.fstat(0).st_ino == pipe
        with stdin_kept():
            os.close(0)
            other = os.open(os.devnull, os.O_RDONLY)  # ...and a later file takes descriptor 0
            assert other == 0
        assert os.fstat(0).st_ino == pipe
        os.write(write_end, b"still here\n")
        assert os.read(0, 100) == b"still here\n"
    finally:
        os.dup2(original, 0)
        for fd in (original, read_end, write_end):
            os.close(fd)


def test_kv_cache_layers_are_separate_buffers():
    """Each layer's keys/values are their own tensors, also after a beam reorder: compiled
    decoding writes them in place, where views of one stacked buffer made inductor copy all of
    it at every step."""
    cache = KVCache(3, 2, 2, 8, 4)
    for _ in range(2):
        buffers = [t for pair in cache.layers for t in pair]
        assert len({t.untyped_storage().data_ptr() for t in buffers}) == len(buffers) == 6
        assert all(t.shape == (2, 2, 8, 4) and t.is_contiguous() for t in buffers)
        cache.reorder(torch.tensor([1, 0]))


def test_bucketed_prompts_give_the_same_logits():
    """Compiled generation left-pads prompts to a multiple of PROMPT_BUCKET tokens: masked and
    with positions counted over real tokens, the padding changes nothing but rounding."""
    torch.manual_seed(0)
    config = DecoderConfig(
        vocab_size=64, dim=32, n_layers=2, n_heads=2, n_kv_heads=1, hidden_dim=64, max_seq_len=40
    )
    decoder = Decoder(config).eval()
    token_ids = torch.randint(3, 64, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, :2] = False  # the second prompt is left-padded already
    padded_ids, padded_mask = bucketed(token_ids, mask, pad_id=0, longest=40)
    assert padded_ids.shape == padded_mask.shape == (2, PROMPT_BUCKET)
    assert padded_mask.sum(1).tolist() == [5, 3]
    assert torch.equal(padded_ids[:, -5:], token_ids)
    want = decoder(token_ids, attention_mask=mask)[:, -1]
    got = decoder(padded_ids, attention_mask=padded_mask)[:, -1]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # never past the room the request leaves, never shorter than the prompt
    assert bucketed(token_ids, mask, 0, longest=6)[0].shape[1] == 6
    assert bucketed(token_ids, mask, 0, longest=3)[0] is token_ids


def test_compiled_cache_is_sized_to_the_request_in_buckets(tiny_checkpoint):
    """Every compiled step reads its whole KV cache: it holds prompt + new tokens rounded up to
    CACHE_BUCKET positions (one compiled step per bucket), never more than the context."""
    model = mmllm.load(tiny_checkpoint, device="cpu").model
    context = model.config.decoder.max_seq_len
    prompt_mask = torch.ones(2, 10, dtype=torch.bool)
    prompt_mask[1, :3] = False
    cache, mask = start_decode(model, prompt_mask, 20, bucket=16)
    assert cache.layers[0][0].shape[2] == mask.shape[1] == 32
    assert torch.equal(mask[:, :10], prompt_mask) and bool(mask[:, 10:].all())
    cache, mask = start_decode(model, prompt_mask, 20)  # eager: exactly the request
    assert mask.shape[1] == 30
    cache, mask = start_decode(model, prompt_mask, context - 10, bucket=CACHE_BUCKET)
    assert mask.shape[1] == context  # capped at the context
    with pytest.raises(GenerationError, match="exceeds the model's context"):
        start_decode(model, prompt_mask, context - 9, bucket=CACHE_BUCKET)


def test_compiling_is_automatic_only_for_jobs_that_pay_for_it(tiny_checkpoint, monkeypatch, caplog):
    import mmllm.compiled as compiled_module
    from mmllm.cli import build_parser

    api = mmllm.load(tiny_checkpoint, device="cpu")  # compile=None: automatic
    calls = []

    class Recorded:
        def __init__(self, model):
            calls.append(1)

    monkeypatch.setattr("mmllm.tasks.CompiledModel", Recorded)
    monkeypatch.setattr(compiled_module, "has_compiler", lambda: True)
    threshold = compiled_module.AUTO_COMPILE_MIN_ITEMS
    assert not api.expect(1) and not api.expect(threshold - 1) and calls == []
    api.expect(threshold)
    assert calls == [1]
    assert f"{threshold} inputs: compiling decoding once" in caplog.text  # the wait is explained
    api.compile = False  # --no-compile: never
    api.expect(10 * threshold)
    assert calls == [1]
    api.compile, api.compiled = True, None  # --compile: even for one input
    api.expect(1)
    assert calls == [1, 1]
    monkeypatch.setattr(compiled_module, "has_compiler", lambda: False)
    assert not compiled_module.worth_compiling(None, threshold, api.model)  # no compiler: eager
    parser = build_parser()
    for command in (["caption", "x.png"], ["alt-text", "x.png"], ["eval"]):
        assert parser.parse_args(command).compile is None
        assert parser.parse_args([*command, "--no-compile"]).compile is False
        assert parser.parse_args([*command, "--compile"]).compile is True


@needs_compiler
def test_the_default_models_copy_path_compiles_once_and_keeps_its_captions():
    from pathlib import Path

    examples = Path(__file__).resolve().parent.parent / "demos" / "examples"
    photos = [examples / "cat.jpg", examples / "coffee.jpg", examples / "shapes1.png"]
    eager = mmllm.load(device="cpu", compile=False)
    compiled = mmllm.load(device="cpu", compile=False)
    compiled.compiled = CompiledModel(compiled.model, options={})  # inductor's defaults
    torch._dynamo.reset()
    want = [str(t) for t in eager.caption(photos, batch_size=3, max_new_tokens=16)]
    assert [str(t) for t in compiled.caption(photos, batch_size=3, max_new_tokens=16)] == want
    steps = compiled.compiled.decoding.step.shapes
    assert len(steps) == 1 and all(key[-1] for key in steps)  # one graph, with the copy path
    # another set of photos: other recognitions, other media lengths, the same padded graph
    again = [examples / "coffee.jpg", examples / "cat.jpg", examples / "shapes2.png"]
    want = [str(t) for t in eager.caption(again, batch_size=3, max_new_tokens=16)]
    assert [str(t) for t in compiled.caption(again, batch_size=3, max_new_tokens=16)] == want
    assert compiled.compiled.decoding.step.shapes == steps
