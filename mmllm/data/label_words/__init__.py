"""Plain words for the classes of the two offline recognizers the encoders use.

The image recognizers name what they see precisely ("Labrador retriever", "tabby", "tench",
"airliner"); people say "dog", "cat", "fish", "airplane". This table gives, for every class, a
clean specific ``name``, a basic-level noun ``basic`` (singular, lower case: what an ordinary
person would call it) and that noun's ``plural``:

- ``imagenet.tsv``: the 1000 ImageNet-1k classes of the EfficientNet-Lite3 classifier, in the
  standard class order (``index wnid name basic plural kinds``);
- ``coco.tsv``: the 80 classes of the 90-id COCO label map of the SSD-MobileNetV2 detector
  (``id name basic plural kinds``).

``kinds`` lists, ``;``-separated, the class's WordNet synonyms and the lemmas of all its
hypernyms, nearest first, without the top of the hierarchy ("entity", "object", ...): what an
existence question may call it ("is there an animal?", "a building?").

How it was made (``scripts/label_words.py`` rebuilds both files, deterministically): ``name`` is
the first name of the class's line in the classifier's labels file, cleaned. ``basic`` comes
from WordNet 3.0: from the class's synset (its wnid) the hypernym graph is searched upward and the
nearest category on a curated list of basic-level categories (dog, cat, bird, fish, car, boat,
guitar, hat, ...) names the class; with none, the class's own WordNet lemma is its basic noun. A
short override table, each entry with its reason, fixes the few classes where WordNet's lemma or
placement is not what a person would say. The COCO names are the label map's, with a basic noun
each written out by hand (e.g. "dining table" -> "table", "tv" -> "television").
"""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from importlib import resources

__all__ = ["LabelWord", "coco_words", "imagenet_words"]


@dataclass(frozen=True)
class LabelWord:
    """A recognizer class in words: its specific name, basic-level noun and that noun's plural,
    and ``kinds``: its WordNet synonyms and what it is a kind of ("tench": "fish", "animal",
    ...; "mosque": "place of worship", "building", ...), nearest first."""

    name: str
    basic: str
    plural: str
    kinds: tuple[str, ...] = ()


def _kinds(cell: str | None) -> tuple[str, ...]:
    return tuple(k for k in (cell or "").split(";") if k and k != "-")


def _rows(filename: str) -> list[dict[str, str]]:
    text = resources.files(__name__).joinpath(filename).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))


@functools.cache
def _imagenet() -> tuple[LabelWord, ...]:
    rows = _rows("imagenet.tsv")
    if [int(r["index"]) for r in rows] != list(range(1000)):
        raise ValueError("imagenet.tsv must list the classes 0..999 in order")
    return tuple(
        LabelWord(r["name"], r["basic"], r["plural"], _kinds(r.get("kinds"))) for r in rows
    )


@functools.cache
def _coco() -> tuple[tuple[int, LabelWord], ...]:
    return tuple(
        (int(r["id"]), LabelWord(r["name"], r["basic"], r["plural"], _kinds(r.get("kinds"))))
        for r in _rows("coco.tsv")
    )


def imagenet_words() -> list[LabelWord]:
    """The 1000 ImageNet-1k classes' words, in class-index order."""
    return list(_imagenet())


def coco_words() -> dict[int, LabelWord]:
    """The 80 COCO classes' words, keyed by their id in the 90-id label map (1 person ... 90
    toothbrush, with gaps)."""
    return dict(_coco())
