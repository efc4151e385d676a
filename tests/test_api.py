"""The Python API on a tiny random checkpoint: return types, alt text rules, probabilities."""

import numpy as np
import pytest
from PIL import Image

import mmllm
from mmllm import Answer, CheckpointError, TextError
from mmllm.tasks import ANSWER_ROOM, ScoredText


@pytest.fixture(scope="module")
def api(tiny_checkpoint):
    return mmllm.load(tiny_checkpoint, device="cpu")


@pytest.fixture
def image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))


def test_caption_of_one_image_is_a_string(api, image):
    assert isinstance(api.caption(image, max_new_tokens=8), str)


def test_caption_of_a_list_is_a_list_equal_to_one_by_one(api, image):
    other = image.rotate(90)
    many = api.caption([image, other, image], batch_size=2, max_new_tokens=8)
    assert many == [api.caption(x, max_new_tokens=8) for x in (image, other, image)]


def test_alt_text_has_no_filler_and_respects_max_chars(api, image, monkeypatch):
    long = ScoredText("an image of " + "a red circle " * 20, 0.9, calibrated=False)
    monkeypatch.setattr(api, "caption", lambda *a, **k: long)
    text = api.alt_text(image, max_chars=60)
    assert not text.lower().startswith(("an image of", "image of"))
    assert len(text) <= 60 and text.endswith(".") and text[0].isupper()


def test_ask_returns_answer_with_probabilities(api, image):
    answer = api.ask(image, "what color is the circle?")
    assert isinstance(answer, Answer) and 0.0 <= answer.prob <= 1.0
    probs = [answer.prob] + [p for _, p in answer.alternatives]
    assert probs == sorted(probs, reverse=True)


def test_ask_with_choices_distributes_probability_over_them(api, image):
    answer = api.ask(image, "is there a star?", choices=["yes", "no"])
    assert answer.text in ("yes", "no")
    assert answer.prob + answer.alternatives[0][1] == pytest.approx(1.0)


def test_ask_audio_only(api):
    beeps = np.sin(np.arange(16000) * 0.2).astype(np.float32)
    assert isinstance(api.ask(audio=beeps, question="how many beeps?").text, str)


def test_empty_question_is_a_typed_error(api, image):
    with pytest.raises(TextError, match="empty"):
        api.ask(image, "   ")


def test_unknown_checkpoint_name_is_a_typed_error():
    with pytest.raises(CheckpointError, match="no-such-model"):
        mmllm.load("no-such-model")


@pytest.mark.parametrize("question", ["什么颜色？", "é\u0301 ü \u200b emoji 🎈?", "\x00\x07 bell?"])
def test_unusual_unicode_questions_are_answered(api, image, question):
    assert isinstance(api.ask(image, question).text, str)


def test_caption_takes_images_or_audio_not_both(api, image):
    with pytest.raises(mmllm.InputError):
        api.caption(image, audio=np.zeros(8000, dtype=np.float32))


def test_audio_caption_list(api):
    clips = [np.zeros(8000, dtype=np.float32), 0.1 * np.ones(12000, dtype=np.float32)]
    captions = api.caption(audio=clips, max_new_tokens=6)
    assert len(captions) == 2 and captions == [
        api.caption(audio=c, max_new_tokens=6) for c in clips
    ]


def test_int8_quantized_model_generates(tiny_checkpoint, image):
    quantized = mmllm.load(tiny_checkpoint, device="cpu", quantize="int8")
    assert isinstance(quantized.caption(image, max_new_tokens=6), str)


@pytest.mark.parametrize(
    "call",
    [
        lambda api, image: api.ask(image, "what is \ud800 this?"),
        lambda api, image: api.ask(image, "what is this?", choices=["yes", "n\udfffo"]),
        lambda api, image: api.generate("hi \ud800", images=[image], max_new_tokens=2),
        lambda api, image: api.generate("hi", images=[image], max_new_tokens=2, stop=["\ud800"]),
    ],
    ids=["question", "choice", "prompt", "stop string"],
)
def test_text_that_is_not_valid_unicode_is_a_text_error(api, image, call):
    with pytest.raises(TextError, match="not valid Unicode"):
        call(api, image)


def test_a_question_too_long_for_the_context_is_a_text_error(api, image):
    room = api.model.config.decoder.max_seq_len
    with pytest.raises(TextError, match="tokens long"):
        api.ask(image, "what " * room)
    fits = "what " * 4
    assert len(api.tokenizer.prompt_ids(fits)) <= room - ANSWER_ROOM
    assert isinstance(api.ask(image, fits).text, str)


def test_a_streamed_caption_ends_with_the_caption_and_confidence_of_caption(api, image):
    stream = api.stream_caption(image, max_new_tokens=8)
    text = "".join(stream)
    whole = api.caption(image, max_new_tokens=8)
    assert text == whole == stream.result
    assert stream.result.confidence == pytest.approx(whole.confidence)
