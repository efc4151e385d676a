"""Generation: batched equals one-by-one, streaming equals non-streaming, sampling, stops."""

import pytest
import torch

import mmllm
from mmllm import GenerationError
from mmllm.data.sources import SyntheticSource
from mmllm.generate import SamplingConfig


@pytest.fixture(scope="module")
def api(tiny_checkpoint):
    return mmllm.load(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def records():
    source = SyntheticSource("heldout", seed=0, image_size=32)
    return [source[i] for i in range(6)]


def test_batched_greedy_equals_one_by_one_with_ragged_prompts_and_mixed_media(api, records):
    prompts = [r.prompt + " please" * i for i, r in enumerate(records)]  # ragged lengths
    images = [r.images for r in records]
    audio = [r.audio if i % 2 else [] for i, r in enumerate(records)]  # some rows without audio
    sampling = SamplingConfig(max_new_tokens=12)
    batched = api.generate_batch(prompts, images, audio, sampling)
    alone = [
        api.generate_batch([p], [i], [a], sampling)[0]
        for p, i, a in zip(prompts, images, audio, strict=True)
    ]
    assert batched == alone
    assert len(set(batched)) > 1  # the rows really differ


def test_streaming_yields_exactly_the_non_streaming_text(api, records):
    r = records[0]
    streamed = "".join(api.stream(r.prompt, r.images, r.audio, SamplingConfig(max_new_tokens=16)))
    assert streamed == api.generate_batch([r.prompt], [r.images], [r.audio], SamplingConfig(16))[0]


def test_stream_caption_joins_to_caption(api, records):
    image = records[0].images[0] if records[0].images else records[1].images[0]
    assert "".join(api.stream_caption(image, max_new_tokens=16)) == api.caption(
        image, max_new_tokens=16
    )


def test_sampling_is_reproducible_with_a_seed(api, records):
    r = records[1]
    kwargs = dict(images=r.images, audio=r.audio, max_new_tokens=12, temperature=1.5, top_p=0.95)
    first = api.generate(r.prompt, seed=7, **kwargs)
    assert first == api.generate(r.prompt, seed=7, **kwargs)
    others = {api.generate(r.prompt, seed=s, **kwargs) for s in range(8, 14)}
    assert len(others | {first}) > 1


def test_stop_string_cuts_exactly(api, records):
    r = records[0]
    full = api.generate(r.prompt, r.images, r.audio, max_new_tokens=16)
    assert len(full) > 3
    stop = full[2:4]
    cut = api.generate(r.prompt, r.images, r.audio, max_new_tokens=16, stop=[stop])
    assert cut == full[: full.find(stop)]


@pytest.mark.parametrize(
    "kwargs",
    [{"max_new_tokens": 0}, {"temperature": -1.0}, {"top_p": 0.0}, {"top_p": 1.5}, {"top_k": 0}],
)
def test_bad_generation_arguments_are_typed_errors(kwargs):
    with pytest.raises(GenerationError):
        SamplingConfig(**kwargs)


def test_prompt_plus_new_tokens_over_the_context_is_a_typed_error(api):
    with pytest.raises(GenerationError, match="context of 64 tokens"):
        api.generate("word " * 40, max_new_tokens=40)


def test_top_k_one_equals_greedy(api, records):
    r = records[2]
    greedy = api.generate(r.prompt, r.images, r.audio, max_new_tokens=10)
    topk = api.generate(
        r.prompt, r.images, r.audio, max_new_tokens=10, temperature=1.0, top_k=1, seed=0
    )
    assert greedy == topk


def test_no_grad_state_after_generation(api, records):
    api.generate(records[0].prompt, records[0].images, max_new_tokens=4)
    assert all(p.grad is None for p in api.model.parameters())
    assert not torch.is_inference_mode_enabled()


def test_beam_search_with_one_beam_equals_greedy(api, records):
    for r in records[:3]:
        greedy = api.generate(r.prompt, r.images, r.audio, max_new_tokens=10)
        assert api.generate(r.prompt, r.images, r.audio, max_new_tokens=10, num_beams=1) == greedy
        assert api.generate_batch(
            [r.prompt], [r.images], [r.audio], SamplingConfig(10), num_beams=1
        ) == [greedy]


def test_batched_beam_search_equals_one_by_one(api, records):
    prompts = [r.prompt + " please" * i for i, r in enumerate(records[:4])]
    images = [r.images for r in records[:4]]
    audio = [r.audio for r in records[:4]]
    sampling = SamplingConfig(max_new_tokens=8)
    batched = api.generate_batch(prompts, images, audio, sampling, num_beams=3)
    alone = [
        api.generate_batch([p], [i], [a], sampling, num_beams=3)[0]
        for p, i, a in zip(prompts, images, audio, strict=True)
    ]
    assert batched == alone
