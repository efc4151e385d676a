"""The shipped label-words tables (read from the TSVs only: no WordNet or recognizer needed)."""

from __future__ import annotations

from mmllm.data.label_words import LabelWord, coco_words, imagenet_words

COCO_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]


def test_imagenet_has_1000_classes_in_order():
    words = imagenet_words()
    assert len(words) == 1000
    assert all(isinstance(w, LabelWord) for w in words)
    assert words[0].name == "tench"
    assert words[281].name == "tabby"
    assert words[999].name == "toilet tissue"


def test_coco_has_the_80_classes_of_the_90_id_map():
    words = coco_words()
    assert sorted(words) == COCO_IDS
    assert len(words) == 80
    assert words[1] == LabelWord("person", "person", "people", words[1].kinds)
    assert words[90].name == "toothbrush"


def test_imagenet_sanity_pairs():
    by_name = {}
    for w in imagenet_words():
        by_name.setdefault(w.name, w.basic)
    expected = {
        "tabby": "cat",
        "Egyptian cat": "cat",
        "Labrador retriever": "dog",
        "Chihuahua": "dog",
        "goldfish": "fish",
        "tench": "fish",
        "airliner": "airplane",
        "sports car": "car",
        "monarch": "butterfly",
        "Granny Smith": "apple",
        "espresso": "coffee",
        "church": "church",
        "umbrella": "umbrella",
        "acoustic guitar": "guitar",
        "school bus": "bus",
        "great white shark": "shark",
        "cock": "chicken",
        "ice bear": "bear",
    }
    assert {n: by_name[n] for n in expected} == expected


def test_coco_sanity_pairs():
    words = coco_words()
    assert (words[67].basic, words[64].basic, words[72].basic) == ("table", "plant", "television")
    assert (words[20].plural, words[74].plural, words[10].plural) == (
        "sheep",
        "mice",
        "traffic lights",
    )


def test_plurals():
    plural = {w.basic: w.plural for w in imagenet_words()}
    assert plural["dog"] == "dogs"
    assert plural["fish"] == "fish"
    assert plural["mouse"] == "mice"
    assert plural["sunglasses"] == "sunglasses"
    assert plural["bus"] == "buses"
    assert plural["butterfly"] == "butterflies"


def test_words_are_clean():
    for w in [*imagenet_words(), *coco_words().values()]:
        assert w.name and w.name == w.name.strip() and "_" not in w.name, w
        assert w.basic and w.basic == w.basic.strip().lower(), w
        assert "_" not in w.basic and "  " not in w.basic, w
        assert w.plural and w.plural == w.plural.strip().lower() and "_" not in w.plural, w


def test_kinds_come_from_wordnet_hypernyms_in_the_sense_meant():
    imagenet, coco = imagenet_words(), coco_words()
    tench, mosque = imagenet[0], imagenet[668]
    assert {"fish", "animal"} <= set(tench.kinds) and "entity" not in tench.kinds
    assert tench.kinds.index("fish") < tench.kinds.index("animal")  # nearest first
    assert "building" in mosque.kinds
    assert "someone" in coco[1].kinds
    assert "toy" in coco[38].kinds and "hawk" not in coco[38].kinds  # the kite that flies
    assert "device" in coco[74].kinds and "rodent" not in coco[74].kinds  # a computer mouse
