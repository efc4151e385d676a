"""Answer normalisation, exact-match scores and the answer confusion table."""

from mmllm.data.collate import Record
from mmllm.eval.metrics import answer_confusion, normalize_answer, vqa_scores


def test_answers_are_normalised_as_vqav2_scores_them():
    assert normalize_answer("Two.") == "2"
    assert normalize_answer("The Red  Circle!") == "red circle"
    assert normalize_answer("none") == "0"
    assert normalize_answer("an apple") == "apple"


def _records() -> list[Record]:
    return [
        Record("how many stars?", "0", category="image", qtype="count"),
        Record("how many stars?", "0", category="image", qtype="count"),
        Record("how many stars?", "2", category="image", qtype="count"),
        Record("is it rising?", "yes", category="audio", qtype="direction"),
        Record("describe the image.", "a red circle", task="caption", category="image"),
    ]


def test_exact_match_per_category_and_question_type():
    predictions = ["one", "0", "two", "Yes.", "a blue star"]
    scores = vqa_scores(_records(), predictions)
    assert scores["overall"] == {"accuracy": 0.75, "n": 4}  # captions are not questions
    assert scores["image"]["accuracy"] == 2 / 3 and scores["audio"]["accuracy"] == 1.0
    assert scores["qtype/count"]["n"] == 3


def test_confusion_shows_which_answers_a_question_type_gets():
    predictions = ["one", "1", "Two", "no", "a blue star"]
    table = answer_confusion(_records(), predictions)
    assert table == {"count": {"0": {"1": 2}, "2": {"2": 1}}, "direction": {"yes": {"no": 1}}}
