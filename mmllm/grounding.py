"""A photo's caption, or its answer to "what is this?", checked against what the recognizers
found.

The decoder learned to put the recognizers' findings into words (``mmllm.data.recognition_text``),
but a small decoder does it imperfectly. Of mmllm-real's 261 photo captions, the template that
taught it named an acceptable noun for 124 and the decoder for 106; for the 33 photos where only
the template was right, the decoder had said things the findings do not hold: "a photo of a
person with two people and a person" (the detector found three), "a photo of a car car (cars),
or maybe a monkey, with three cars, a car and a car", "a large red circle and a large blue
circle" (the synthetic world's words, for a photo of an eraser).

The findings are known when the text is written, so the text is checked, as existence answers
are read off them (``mmllm.evidence``). A text is **grounded** when it is one the findings
support, in the grammar the model learned: it names the findings' subject (by its everyday
noun, its specific name or both; hedged with "what may be" / "maybe" where the findings are
unsure, and optionally where they are sure), then none, some or all of their other likely nouns
("or maybe a palace") in order, each once, then none, some or all of the detected objects, each
once and with its count. Whatever else the decoder says (another noun, a wrong count, a
repetition, a word of the synthetic world) makes the text ungrounded, and the findings' own words
replace it: the caption or answer the model was trained to give for them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import numpy as np

from mmllm.data.recognition_text import Reading, answer_what, article, caption, read_rows

# questions that ask what a photo shows: its answer names the findings' subject
IDENTIFY = re.compile(
    r"^what(?: is this| is that| is it| is in the (?:picture|photo|image)"
    r"| does the (?:picture|photo|image) show| animal is this| kind of (?:animal|thing|object)"
    r" is this| kind of place is this| place is this)\s*\??$"
)
MAX_OBJECT_KINDS = 8  # more kinds of object than this: all of them or none (2^8 subsets at most)


def asks_what_it_is(question: str) -> bool:
    """Whether ``question`` asks what a picture shows ("what is this?", "what animal is
    this?", "what kind of place is this?")."""
    return IDENTIFY.match(" ".join(question.lower().split())) is not None


def normalized(text: str) -> str:
    """Lower case, one space, no final full stop: the form texts are compared in."""
    return " ".join(text.lower().split()).rstrip(".").strip()


def subject_phrases(reading: Reading) -> list[str]:
    """The ways to name the subject: "a dog (Labrador retriever)", "a Labrador retriever",
    "a dog"."""
    s = reading.subject
    phrases = [s.phrase(), article(s.basic)]
    if s.specific:
        phrases.append(article(s.specific))
    return list(dict.fromkeys(phrases))


def _subsets(items) -> list[tuple]:
    """Every subset of ``items``, each in their order, the empty one first."""
    return [c for k in range(len(items) + 1) for c in itertools.combinations(items, k)]


def _sub_readings(reading: Reading) -> Iterator[Reading]:
    """The reading with none, some or all of its alternatives (in order) and objects."""
    kinds = list(reading.objects)
    object_sets = [(), tuple(kinds)] if len(kinds) > MAX_OBJECT_KINDS else _subsets(kinds)
    for alts in _subsets(reading.alternatives):
        for objs in object_sets:
            yield Reading(
                reading.subject,
                alts,
                {c: reading.objects[c] for c in objs},
                reading.nouns,
            )


def _supported(reading: Reading, write) -> set[str]:
    """Every text ``write(part, phrase, hedged)`` gives for the findings' sub-readings, subject
    phrases and hedges (a hedge required where the subject is unsure), ``normalized``."""
    hedges = [True] + ([False] if reading.subject.sure else [])
    return {
        normalized(write(part, phrase, hedged))
        for part in _sub_readings(reading)
        for phrase in subject_phrases(reading)
        for hedged in hedges
    }


def grounded_captions(reading: Reading) -> set[str]:
    """Every caption the findings support (``normalized``)."""
    return _supported(reading, caption)


def grounded_answers(reading: Reading) -> set[str]:
    """Every answer to "what is this?" the findings support (``normalized``)."""
    return _supported(reading, answer_what)


def grounded_text(text: str, rows: np.ndarray, task: str) -> str | None:
    """None when ``text`` (a ``task`` of "caption" or "answer" about one photo) is grounded in
    the recognition ``rows`` ``(K, 6)``; else the findings' own caption or answer. None too
    when the rows name nothing to check against."""
    try:
        reading = read_rows(rows)
    except ValueError:  # neither a class nor a sure object: nothing to check against
        return None
    if task == "caption":
        allowed, own = grounded_captions(reading), caption(reading)
    elif task == "answer":
        allowed, own = grounded_answers(reading), answer_what(reading)
    else:
        raise ValueError(f"task must be 'caption' or 'answer', got {task!r}")
    return None if normalized(text) in allowed else own
