"""A photo's caption or "what is this?" answer checked against the recognizers' findings
(``mmllm.grounding``): kept where they support it, replaced by their own words where not."""

import numpy as np
import pytest

from encoders.recognizers import COCO_OFFSET
from mmllm.data.recognition_text import answer_what, caption, read_rows
from mmllm.grounding import asks_what_it_is, grounded_answers, grounded_captions, grounded_text

TABBY, EGYPTIAN_CAT, MOSQUE, PALACE, CHURCH = 281, 285, 668, 698, 497  # ImageNet classes
PERSON, CUP = 1, 47  # COCO ids


def rows(*found: tuple[int, float]) -> np.ndarray:
    """Recognition rows ``(K, 6)``: (label, score) with a box."""
    return np.array([[label, score, 0.1, 0.1, 0.9, 0.9] for label, score in found], np.float32)


CAT_WITH_TWO_PEOPLE = rows(
    (EGYPTIAN_CAT, 0.6),
    (TABBY, 0.2),
    (COCO_OFFSET + PERSON, 0.9),
    (COCO_OFFSET + PERSON, 0.8),
    (COCO_OFFSET + CUP, 0.7),
)
UNSURE_BUILDING = rows((PALACE, 0.15), (MOSQUE, 0.12), (CHURCH, 0.11))


def test_the_findings_own_words_are_grounded():
    for found in (CAT_WITH_TWO_PEOPLE, UNSURE_BUILDING):
        reading = read_rows(found)
        assert grounded_text(caption(reading), found, "caption") is None
        assert grounded_text(answer_what(reading), found, "answer") is None


def test_a_caption_may_leave_out_what_the_findings_hold_but_not_add_to_it():
    own = caption(read_rows(CAT_WITH_TWO_PEOPLE))
    assert own == "a photo of an Egyptian cat with two people and a cup"
    for kept in (
        "a photo of an Egyptian cat",
        "a photo of a cat with two people",
        "A photo of a cat with a cup.",
        "a photo of what may be an Egyptian cat with two people and a cup",
    ):
        assert grounded_text(kept, CAT_WITH_TWO_PEOPLE, "caption") is None, kept
    for wrong in (
        "a photo of an Egyptian cat with a person and a person",  # miscounted, repeated
        "a photo of an Egyptian cat with three people",  # miscounted
        "a photo of an Egyptian cat with a cat",  # the subject again
        "a photo of a dog with two people",  # another subject
        "a photo of an Egyptian cat, or maybe a wine glass",  # an alternative never found
        "a large red circle and a large blue circle",  # the synthetic world's words
        "a photo of an Egyptian cat cat",
    ):
        assert grounded_text(wrong, CAT_WITH_TWO_PEOPLE, "caption") == own, wrong


def test_an_unsure_subject_must_be_hedged_and_alternatives_come_in_order():
    reading = read_rows(UNSURE_BUILDING)
    assert not reading.subject.sure and reading.alternatives == ("mosque", "church")
    allowed = grounded_captions(reading)
    assert "a photo of what may be a palace, or maybe a mosque" in allowed
    assert "a photo of a palace" not in allowed  # claims a certainty the findings lack
    assert "a photo of what may be a palace, or maybe a church or a mosque" not in allowed
    answers = grounded_answers(reading)
    assert "maybe a palace, or maybe a church" in answers and "a palace" not in answers
    assert grounded_text("maybe a church, or maybe a wine glass", UNSURE_BUILDING, "answer") == (
        answer_what(reading)
    )


def test_rows_that_name_nothing_are_not_checked():
    assert grounded_text("anything at all", np.zeros((0, 6), np.float32), "caption") is None
    with pytest.raises(ValueError, match="caption"):
        grounded_text("a cat", CAT_WITH_TWO_PEOPLE, "poem")


@pytest.mark.parametrize(
    ("question", "identifies"),
    [
        ("what is this?", True),
        ("What is in the picture?", True),
        ("what does the photo show", True),
        ("what animal is this?", True),
        ("what kind of place is this?", True),
        ("what color is the cup?", False),
        ("what is the cat doing?", False),
        ("is there a cat in the picture?", False),
        ("how many people are there?", False),
    ],
)
def test_questions_that_ask_what_a_picture_shows(question, identifies):
    assert asks_what_it_is(question) is identifies
