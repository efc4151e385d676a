"""Answers read off the recognizers' findings: is there a given thing in a photo, how many?

A model that reads the real recognizers (``encoders.recognizers``) is told what they found, but
a small decoder does not reliably match a question's noun against those findings: asked "is
there a Louvre in the picture?" about a bison, mmllm-real said "yes" (0.99). Existence is a
lookup, so it is answered as one, from the evidence, as automatic alt text answers "may
contain" (Wu et al., 2017).

What the recognizers *name* is the rule of the teacher-label oracle (``mmllm.eval.photos``): the
classifier's top class (its label line, specific name, basic noun and plural) and every object
the detector scores at least ``SURE_OBJECT``. A noun is named when it equals one of those
words or phrases as whole words, a plural counting as its singular.

- "yes": the noun is named; its probability is the finding's score.
- "yes" about a kind of thing ("an animal", "a building", "a fish"): the top class is of that
  kind (its WordNet hypernyms: ``mmllm.data.label_words``), or the classes of that kind
  together, or an object of it, score at least ``SURE_KIND``; its probability is theirs.
- "no" about a thing the recognizers know (a class or object of theirs): its probability is 1
  minus their best score for it anywhere (their other top classes, their unsure objects).
- "no" about a thing they cannot name at all (a landmark, a dam): they cannot tell, so its
  probability is ``UNKNOWN_THING`` (0.5).

"How many ...?" about a thing the detector knows (by name or kind) is its count of sure
objects (``count``), a count of none no surer than the classifier's doubt about the thing;
about anything else the model answers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from encoders.recognizers import COCO_OFFSET, N_CLASSES, imagenet_labels
from mmllm.data.label_words import coco_words, imagenet_words

SURE_OBJECT = 0.5  # a detected object this sure is named (the oracle's rule)
SURE_KIND = 0.5  # classes and objects of a kind ("animal") this sure together say "yes"
UNKNOWN_THING = 0.5  # the probability of "no" about a thing the recognizers cannot name
# "is there a dog in the picture?", "are there any cats?", "do you see a car?", "does this
# photo show a bridge?": the thing asked about
EXISTENCE = re.compile(
    r"^(?:(?:is|are) there|(?:do|can) you see|does (?:the|this) (?:picture|photo|image) "
    r"(?:show|contain|have))\s+(?:(?:a|an|any|some|the)\s+)?(?P<thing>[a-z][a-z' -]*?)"
    r"(?:\s+(?:in|on) (?:the|this) (?:picture|photo|image))?\s*\??$"
)


# "how many dogs are there?", "how many people do you see?", "how many cars are in the
# picture?": the things counted
COUNTING = re.compile(
    r"^how many (?P<thing>[a-z][a-z' -]*?)\s+(?:are there|can you see|do you see|are (?:in|on) "
    r"(?:the|this) (?:picture|photo|image)|are visible)"
    r"(?:\s+(?:in|on) (?:the|this) (?:picture|photo|image))?\s*\??$"
)


@dataclass(frozen=True)
class Existence:
    """An answer about whether ``thing`` is in the picture, with its probability; ``known``:
    whether the recognizers can name the thing at all."""

    thing: str
    answer: str
    prob: float
    known: bool = True


@dataclass(frozen=True)
class Count:
    """How many ``thing`` the detector found, with the probability that the count is right."""

    thing: str
    count: int
    prob: float


def count_thing(question: str) -> str | None:
    """The things a counting question asks about ("how many dogs are there?" -> "dogs"), or
    None for any other question."""
    match = COUNTING.match(" ".join(question.lower().split()))
    return match.group("thing").strip() if match else None


def can_count(thing: str) -> bool:
    """Whether some detector class is ``thing``, by name or by kind (only objects are counted)."""
    return bool(_countable(thing))


def count(thing: str, rows: Sequence[Sequence[float]]) -> Count | None:
    """How many ``thing`` one picture's recognizer rows hold: the detector's objects that are
    the thing, by name or by kind, scored at least ``SURE_OBJECT`` (the classifier counts
    nothing). Its probability treats each such detection as right with its score, and each
    unsure one (0.3 to 0.5) as absent with one minus it. A count of none is also only as sure
    as the classifier's doubt allows: where its classes that are the thing sum to ``p`` (a
    tabby seen whole, no cat detected), none is right at most with ``1 - p``. None where no
    detector class is such a thing (``can_count``): the detector cannot count it, and the
    model answers."""
    countable = _countable(thing)
    if not countable:
        return None
    named, of_kind = _labels_naming(thing)
    known = named | of_kind
    n, prob, seen_whole = 0, 1.0, 0.0
    for label, score, *_ in rows:
        label = round(label)
        if label in countable:
            sure = score >= SURE_OBJECT
            n += sure
            prob *= score if sure else 1 - score
        elif label < N_CLASSES and label in known:
            seen_whole += score
    if n == 0:
        prob *= max(0.0, 1.0 - seen_whole)
    return Count(thing, n, float(prob))


def existence_thing(question: str) -> str | None:
    """The thing an existence question asks about ("is there a dog in the picture?" ->
    "dog"), or None for any other question."""
    match = EXISTENCE.match(" ".join(question.lower().split()))
    return match.group("thing").strip() if match else None


def words(text: str) -> list[str]:
    """Lower-case words of ``text``, punctuation dropped."""
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


def singular(word: str) -> str:
    """A plural noun's singular by the regular English endings (``cats`` -> ``cat``)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def names(text: str, noun: str) -> bool:
    """Whether ``text`` names ``noun`` (a word or phrase), as whole words, plural allowed."""
    said, wanted = words(text), words(noun)
    if not wanted:
        return False
    said_singular = [singular(w) for w in said]
    n = len(wanted)
    for i in range(len(said) - n + 1):
        head, last = said[i : i + n - 1], said[i + n - 1]
        if head == wanted[:-1] and (
            last == wanted[-1] or said_singular[i + n - 1] == singular(wanted[-1])
        ):
            return True
    return False


@functools.cache
def _label_texts() -> dict[int, str]:
    """Recognizer label -> every word it goes by, as one text (``names`` searches it)."""
    texts = {}
    for i, (line, word) in enumerate(zip(imagenet_labels(), imagenet_words(), strict=True)):
        texts[i] = f"{line}, {word.name}, {word.basic}, {word.plural}"
    for cid, word in coco_words().items():
        texts[COCO_OFFSET + cid] = f"{word.name}, {word.basic}, {word.plural}"
    return texts


@functools.cache
def _kind_texts() -> dict[int, str]:
    """Recognizer label -> what it is a kind of ("animal", "building", ...), as one text."""
    kinds = {i: ", ".join(word.kinds) for i, word in enumerate(imagenet_words())}
    for cid, word in coco_words().items():
        kinds[COCO_OFFSET + cid] = ", ".join(word.kinds)
    return kinds


@functools.lru_cache(maxsize=4096)
def _labels_naming(thing: str) -> tuple[frozenset[int], frozenset[int]]:
    """The recognizer labels whose words name ``thing``, and those that are a kind of it
    (one pass over every label's texts per thing, then cached)."""
    named = frozenset(label for label, text in _label_texts().items() if names(text, thing))
    of_kind = frozenset(label for label, text in _kind_texts().items() if names(text, thing))
    return named, of_kind


def _countable(thing: str) -> frozenset[int]:
    """The detector labels that are ``thing``, by name or by kind."""
    named, of_kind = _labels_naming(thing)
    return frozenset(label for label in named | of_kind if label >= COCO_OFFSET)


def existence(thing: str, rows: Sequence[Sequence[float]]) -> Existence:
    """The answer about ``thing`` from one picture's recognizer rows ``(label, score, x1, y1,
    x2, y2)`` (its top classes first, then its objects: ``encoders.recognizers``)."""
    named, of_kind = _labels_naming(thing)
    best_named, best_any, classes_before = 0.0, 0.0, 0
    kind_sum, kind_top, kind_object = 0.0, 0.0, 0.0  # of the classes and objects of its kind
    for label, score, *_ in rows:
        label = round(label)
        is_class = label < N_CLASSES
        if label in named:
            best_any = max(best_any, score)
            top_class = is_class and classes_before == 0
            if top_class or (not is_class and score >= SURE_OBJECT):
                best_named = max(best_named, score)
        if label in of_kind:
            if is_class:
                kind_sum += score
                kind_top = score if classes_before == 0 else kind_top
            else:
                kind_object = max(kind_object, score)
        classes_before += is_class
    kind_score = max(kind_sum, kind_object)
    if best_named > 0 or kind_top > 0 or kind_score >= SURE_KIND:
        return Existence(thing, "yes", float(max(best_named, kind_score)))
    if named or of_kind:  # a thing they know
        return Existence(thing, "no", float(1 - max(best_any, kind_score)))
    return Existence(thing, "no", UNKNOWN_THING, known=False)
