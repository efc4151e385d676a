"""Existence questions answered off the recognizers' findings (``mmllm.evidence``)."""

import pytest

from encoders.recognizers import COCO_OFFSET
from mmllm.evidence import UNKNOWN_THING, count, count_thing, existence, existence_thing, names

TABBY, EGYPTIAN_CAT, SPORTS_CAR, MOSQUE, PALACE = 281, 285, 817, 668, 698  # ImageNet classes
PERSON, CAT, AIRPLANE, DOG = 1, 17, 5, 18  # COCO ids


def row(label: int, score: float) -> list[float]:
    return [label, score, 0.1, 0.1, 0.9, 0.9]


@pytest.mark.parametrize(
    ("question", "thing"),
    [
        ("is there a dog in the picture?", "dog"),
        ("Is there an  opera house in this photo?", "opera house"),
        ("are there any cats?", "cats"),
        ("are there scissors in the picture?", "scissors"),
        ("do you see a car", "car"),
        ("can you see the sea?", "sea"),
        ("does this image show a bridge?", "bridge"),
        ("what animal is this?", None),
        ("how many people are there?", None),
        ("is this a dog?", None),
    ],
)
def test_existence_questions_name_their_thing(question, thing):
    assert existence_thing(question) == thing


def test_names_matches_whole_words_and_plurals():
    assert names("tabby, tabby cat, cat, cats", "cats")
    assert names("two people and a bus", "bus")
    assert not names("a catamaran", "cat")
    assert names("sports car, sport car", "sports car") and not names("car", "sports car")


def test_the_top_class_and_sure_objects_say_yes_with_their_score():
    rows = [row(TABBY, 0.4), row(EGYPTIAN_CAT, 0.3), row(COCO_OFFSET + PERSON, 0.8)]
    for name in ("tabby", "tabby cat"):  # the top class, by any of its names
        assert (existence(name, rows).answer, existence(name, rows).prob) == ("yes", 0.4)
    cat = existence("cat", rows)  # both classes are cats: together
    assert (cat.answer, cat.prob) == ("yes", pytest.approx(0.7))
    person = existence("people", rows)  # a plural asks for the singular's object
    assert (person.answer, person.prob) == ("yes", pytest.approx(0.8))


def test_unsure_findings_say_no_with_their_doubt_and_unknown_things_an_even_chance():
    rows = [row(TABBY, 0.4), row(SPORTS_CAR, 0.2), row(COCO_OFFSET + AIRPLANE, 0.3)]
    car = existence("sports car", rows)  # not the top class
    assert (car.answer, car.prob) == ("no", pytest.approx(0.8))
    plane = existence("airplane", rows)  # an object under 0.5
    assert (plane.answer, plane.prob) == ("no", pytest.approx(0.7))
    assert existence("giraffe", rows).prob == 1.0  # known to them, and nowhere in sight
    for found in (rows, []):
        assert existence("opera house", found).prob == UNKNOWN_THING


def test_kinds_of_things_are_answered_from_the_classes_and_objects_of_that_kind():
    """ "is there an animal / a building / someone?": the recognizers' classes and objects of
    that kind (their WordNet hypernyms), summed over classes."""
    rows = [row(TABBY, 0.4), row(EGYPTIAN_CAT, 0.3), row(SPORTS_CAR, 0.1)]
    animal = existence("animal", rows)
    assert (animal.answer, animal.prob, animal.known) == ("yes", pytest.approx(0.7), True)
    assert existence("mammals", rows).answer == "yes"  # a plural asks for the singular
    vehicle = existence("vehicle", rows)  # a kind the recognizers know, too unlikely here
    assert (vehicle.answer, vehicle.prob, vehicle.known) == ("no", pytest.approx(0.9), True)
    person = [row(SPORTS_CAR, 0.9), row(COCO_OFFSET + PERSON, 0.8)]
    assert existence("someone", person).answer == "yes"  # a synonym of the object's class
    assert existence("animal", person).answer == "no"
    # the top class is no building, and no building class is sure alone: together they are
    building = [row(SPORTS_CAR, 0.3), row(MOSQUE, 0.28), row(PALACE, 0.25)]
    assert existence("building", building).answer == "yes"
    assert existence("mosque", building).answer == "no"  # not the top class, not sure


@pytest.mark.parametrize(
    ("question", "thing"),
    [
        ("how many dogs are there?", "dogs"),
        ("How many people do you see?", "people"),
        ("how many cars are in the picture?", "cars"),
        ("how many animals are there in the photo?", "animals"),
        ("how many beeps do you hear?", None),
        ("is there a dog?", None),
    ],
)
def test_counting_questions_name_their_things(question, thing):
    assert count_thing(question) == thing


def test_the_detector_counts_its_sure_objects_by_name_or_kind():
    rows = [
        row(TABBY, 0.6),  # the classifier counts nothing
        row(COCO_OFFSET + PERSON, 0.9),
        row(COCO_OFFSET + PERSON, 0.8),
        row(COCO_OFFSET + PERSON, 0.4),  # unsure: not counted, and it lowers the probability
        row(COCO_OFFSET + DOG, 0.7),
    ]
    people = count("people", rows)
    assert (people.count, people.prob) == (2, pytest.approx(0.9 * 0.8 * 0.6))
    assert count("dogs", rows).count == 1
    cats = count("cats", rows)  # a COCO class, none detected, but the classifier sees a tabby
    assert (cats.count, cats.prob) == (0, pytest.approx(1 - 0.6))
    assert count("giraffes", rows).prob == pytest.approx(1.0)  # nobody saw one anywhere
    assert count("animals", rows).count == 1  # by kind: the dog
    assert count("tabbies", rows) is None  # no detector class: the model answers
    assert count("opera houses", rows) is None
