"""The request planner, and fuzzing of the image and audio loaders with hypothesis."""

import contextlib
import io

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

import mmllm
from encoders import AudioEncoderConfig, ImageEncoderConfig
from mmllm import InputError, MediaLimitError
from mmllm.processing import AudioProcessor, ImageProcessor
from tests.conftest import tiny_config

IMAGES = ImageProcessor(ImageEncoderConfig(image_size=16))
AUDIO = AudioProcessor(AudioEncoderConfig(max_seconds=2))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def api(tiny_checkpoint):
    return mmllm.load(tiny_checkpoint, device="cpu")


def test_plan_counts_media_tokens_and_memory(api):
    plan = api.plan(
        images=[Image.new("RGB", (64, 64))], audio=[np.zeros(16000)], prompt="hi", max_new_tokens=8
    )
    cfg = api.model.config
    assert plan.image_tokens == cfg.image.n_tokens
    assert plan.audio_tokens == cfg.audio.n_tokens(16000)
    assert plan.kv_cache_bytes > 0 and plan.media_kv_bytes > 0
    assert plan.total_bytes > plan.weights_bytes


def test_plan_refuses_too_many_items_before_decoding(api):
    with pytest.raises(MediaLimitError, match="limit of 4 media items"):
        api.plan(images=[b"never decoded"] * 5)


def test_plan_refuses_huge_image_from_its_header(api):
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")
    with pytest.raises(MediaLimitError, match="over the limit"):
        api.plan(images=[buffer.getvalue()])


def test_plan_refuses_long_audio_from_its_header(api):
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(16000 * 40, dtype=np.float32), 16000, format="WAV")
    with pytest.raises(MediaLimitError, match="over the limit of 4 s"):
        api.ask(audio=buffer.getvalue(), question="how many beeps?")


def test_datasets_cut_long_audio_to_the_window_instead_of_refusing(api):
    cutting = mmllm.MMLLM(api.model, api.tokenizer, truncate_audio=True)
    six_seconds = 0.1 * np.ones(16000 * 6, dtype=np.float32)
    plan = cutting.plan(audio=[six_seconds])
    assert plan.audio_tokens == api.model.config.audio.n_tokens(16000 * 4)  # the 4 s window
    assert cutting.caption(audio=six_seconds, max_new_tokens=2) is not None
    with pytest.raises(MediaLimitError, match="over the limit of 30 s"):
        cutting.plan(audio=[np.zeros(16000 * 31, dtype=np.float32)])


@FUZZ
@given(st.binary(max_size=2048))
def test_image_loader_on_random_bytes_raises_only_typed_errors(data):
    with contextlib.suppress(InputError):
        IMAGES(data)


@FUZZ
@given(st.binary(max_size=2048))
def test_audio_loader_on_random_bytes_raises_only_typed_errors(data):
    with contextlib.suppress(InputError):
        AUDIO(data)


@FUZZ
@given(
    arrays(
        dtype=st.sampled_from([np.uint8, np.int16, np.float32, np.float64]),
        shape=st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 2, 3, 4, 5])),
    )
)
def test_image_loader_on_random_arrays(array):
    with contextlib.suppress(InputError):
        assert IMAGES(array).shape == (3, 16, 16)


@FUZZ
@given(
    arrays(
        dtype=st.sampled_from([np.int16, np.int32, np.float32, np.float64]),
        shape=st.one_of(
            st.tuples(st.integers(0, 5000)), st.tuples(st.integers(1, 3), st.integers(0, 3000))
        ),
    ),
    st.integers(-10, 200_000),
)
def test_audio_loader_on_random_arrays_and_rates(array, rate):
    try:
        out = AUDIO(array, sample_rate=rate)
        assert out.ndim == 1 and out.shape[0] >= 400
    except InputError:
        pass


def test_config_used_by_the_fuzz_is_the_tiny_one():
    assert tiny_config().image.image_size == 32  # the fixture model is tiny; the fuzz is fast


@FUZZ
@given(
    arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.float16, np.uint8, np.int16, np.bool_]),
        shape=st.tuples(st.integers(1, 12), st.integers(1, 12), st.sampled_from([1, 3, 4])),
        elements=None,
    )
)
def test_any_image_array_is_pixels_or_a_typed_error(array):
    """Any dtype, shape and value (NaN, inf, huge) gives pixels or an ImageError, never a crash
    or pixels made from NaN."""
    try:
        pixels = IMAGES(array)
    except InputError:
        assert array.dtype.kind == "f" and not np.isfinite(array).all()
        return
    assert pixels.shape == (3, 16, 16) and np.isfinite(pixels.numpy()).all()


@FUZZ
@given(st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=20))
def test_any_question_is_answered_or_a_text_error(api, text):
    """Any Python string as a question, choice or stop string: an answer or a TextError
    (lone surrogates cannot be encoded), never a crash."""
    from mmllm import GenerationError, TextError

    image = Image.new("RGB", (8, 8))
    try:
        api.ask(image, text or "?", choices=["yes", text or "no"])
        api.generate(text, images=[image], max_new_tokens=2, stop=[text])
    except (TextError, GenerationError) as error:  # the tiny model's context is 64 tokens
        surrogate = any(0xD800 <= ord(c) <= 0xDFFF for c in text)
        assert surrogate or not text.strip() or "context" in str(error), error
