"""What the recognizers see, put into words: training targets for real pictures.

Recognition rows (``encoders.recognizers``: ImageNet classes with their probability, COCO
objects with score and box) become a caption and answers by fixed rules, so the decoder learns
to say what its teachers see: the class probabilities are summed by everyday noun (five dog
breeds at 0.15 each say "a dog" surely), the specific class is named beside it ("a dog
(Labrador retriever)"), and confident objects are listed with their counts. With nothing sure,
the words say so ("what may be a ..."). The label words come from ``mmllm.data.label_words``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from encoders.recognizers import COCO_OFFSET, N_CLASSES
from mmllm.data.label_words import coco_words, imagenet_words

SURE_CLASS = 0.25  # summed probability of an everyday noun that makes it the picture's subject
SURE_OBJECT = 0.5  # detector score from which an object is named
ALTERNATIVE = 0.1  # summed probability from which another everyday noun is named as a maybe
MAX_ALTERNATIVES = 2
ANIMAL_CLASSES = range(0, 398)  # ImageNet's animals come first
COCO_ANIMALS = range(16, 26)  # bird .. giraffe
WHAT_QUESTIONS = ("what is this?", "what is in the picture?", "what does the picture show?")
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def article(phrase: str) -> str:
    return f"an {phrase}" if phrase[:1].lower() in "aeiou" else f"a {phrase}"


@dataclass(frozen=True)
class Subject:
    """The picture's main thing: its everyday noun, a more specific name (or ""), whether it
    is an animal, and how sure the recognizers are."""

    basic: str
    specific: str
    animal: bool
    sure: bool

    def phrase(self) -> str:
        """e.g. "a dog (Labrador retriever)", "an Egyptian cat", "a cup"."""
        words = self.specific.lower().split()
        if not self.specific or self.specific.lower() == self.basic or self.basic in words:
            return article(self.specific or self.basic)
        return f"{article(self.basic)} ({self.specific})"


@dataclass(frozen=True)
class Reading:
    """Rows read: the subject, other possible everyday nouns (most likely first), the named
    objects (COCO id -> count), the sure nouns."""

    subject: Subject
    alternatives: tuple[str, ...]
    objects: dict[int, int]
    nouns: frozenset[str]


def read_rows(rows: np.ndarray) -> Reading:
    """rows ``(K, 6)`` -> ``Reading``."""
    rows = np.asarray(rows, dtype=np.float32).reshape(-1, 6)
    names, coco = imagenet_words(), coco_words()
    by_basic: dict[str, float] = {}
    best: dict[str, tuple[float, int]] = {}
    objects: Counter[int] = Counter()
    top_object = None
    for label, score, *_ in rows.tolist():
        label = round(label)
        if label < N_CLASSES:
            basic = names[label].basic
            by_basic[basic] = by_basic.get(basic, 0.0) + score
            if score > best.get(basic, (-1.0, 0))[0]:
                best[basic] = (score, label)
        elif score >= SURE_OBJECT and label - COCO_OFFSET in coco:
            objects[label - COCO_OFFSET] += 1
            if top_object is None:
                top_object = (score, label - COCO_OFFSET)
    subject = None
    if by_basic:
        basic = max(by_basic, key=lambda b: (by_basic[b], -best[b][1]))
        label = best[basic][1]
        sure = by_basic[basic] >= SURE_CLASS
        if sure or top_object is None:
            subject = Subject(basic, names[label].name, label in ANIMAL_CLASSES, sure)
    if subject is None and top_object is not None:
        word = coco[top_object[1]]
        subject = Subject(word.basic, word.name, top_object[1] in COCO_ANIMALS, True)
    if subject is None:
        raise ValueError("recognition rows hold neither a class nor a sure object")
    nouns = {b for b, p in by_basic.items() if p >= SURE_CLASS}
    nouns |= {
        names[lab].name.lower()
        for _, lab in best.values()
        if by_basic[names[lab].basic] >= SURE_CLASS
    }
    nouns |= {coco[c].basic for c in objects} | {coco[c].name for c in objects}
    ranked = sorted(by_basic, key=lambda b: (-by_basic[b], best[b][1]))
    alternatives = tuple(b for b in ranked if b != subject.basic and by_basic[b] >= ALTERNATIVE)[
        :MAX_ALTERNATIVES
    ]
    return Reading(subject, alternatives, dict(objects), frozenset(nouns | {subject.basic}))


def maybe(reading: Reading) -> str:
    """ ", or maybe a monastery or a church" (the other likely nouns), or ""."""
    if not reading.alternatives:
        return ""
    return ", or maybe " + " or ".join(article(b) for b in reading.alternatives)


def object_list(objects: dict[int, int], skip: str = "") -> str:
    """{COCO id: count} -> "two people, a car and a dog" (``skip``: a noun already said)."""
    coco = coco_words()
    parts = []
    for cid, n in sorted(objects.items(), key=lambda kv: (-kv[1], kv[0])):
        word = coco[cid]
        if skip and skip in (word.basic, word.name):
            continue
        count = NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)
        parts.append(article(word.name) if n == 1 else f"{count} {word.plural}")
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(reading: Reading, phrase: str | None = None, hedged: bool | None = None) -> str:
    """e.g. "a photo of a dog (Labrador retriever) with two people and a car", "a photo of a
    palace, or maybe a monastery, with a person". ``phrase``: the subject named another way
    (default ``Subject.phrase``); ``hedged``: "what may be" (default: where it is unsure)."""
    subject = reading.subject
    hedged = not subject.sure if hedged is None else hedged
    lead = "a photo of what may be " if hedged else "a photo of "
    others = object_list(reading.objects, skip=subject.basic)
    alternatives = maybe(reading)
    joint = "," if alternatives and others else ""
    tail = alternatives + joint + (f" with {others}" if others else "")
    return lead + (phrase or subject.phrase()) + tail


def answer_what(reading: Reading, phrase: str | None = None, hedged: bool | None = None) -> str:
    """e.g. "a dog (Labrador retriever)", "maybe a palace, or maybe a monastery" (``phrase``
    and ``hedged`` as for :func:`caption`)."""
    subject = reading.subject
    hedged = not subject.sure if hedged is None else hedged
    what = phrase or subject.phrase()
    return (f"maybe {what}" if hedged else what) + maybe(reading)


def questions(reading: Reading, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """(question, answer, qtype) about the reading, a few of each kind, seeded by ``rng``."""
    coco = coco_words()
    subject = reading.subject
    out = [(str(rng.choice(WHAT_QUESTIONS)), answer_what(reading), "what_object")]
    if subject.animal:
        out.append(("what animal is this?", answer_what(reading), "what_animal"))
    present = sorted(reading.nouns)
    if present and rng.random() < 0.5:
        noun = str(rng.choice(present))
        out.append((f"is there {article(noun)} in the picture?", "yes", "is_there"))
    else:
        pool = [w.basic for w in imagenet_words()] + [w.basic for w in coco.values()]
        noun = str(rng.choice(pool))
        answer = "yes" if noun in reading.nouns else "no"
        out.append((f"is there {article(noun)} in the picture?", answer, "is_there"))
    ids = list(reading.objects) or [int(rng.choice(list(coco)))]
    if rng.random() < 0.3:
        ids.append(int(rng.choice(list(coco))))
    cid = int(rng.choice(ids))
    out.append(
        (f"how many {coco[cid].plural} are there?", str(reading.objects.get(cid, 0)), "count")
    )
    return out
