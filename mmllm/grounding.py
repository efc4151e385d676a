"""A photo's caption checked against what the recognizers found.

The decoder learned to put the recognizers' findings into words (``mmllm.data.recognition_text``),
but a small decoder does it imperfectly. Of mmllm-real's 261 photo captions, the template that
taught it named an acceptable noun for 124 and the decoder for 106; for the 33 photos where only
the template was right, the decoder had said things the findings do not hold: "a photo of a
person with two people and a person" (the detector found three), "a photo of a car car (cars),
or maybe a monkey, with three cars, a car and a car", "a large red circle and a large blue
circle" (the synthetic world's words, for a photo of an eraser).

The findings are known when the caption is written, so it is checked, as existence answers
are read off them (``mmllm.evidence``). A caption is **grounded** when it is one the findings
support, in the grammar the model learned: it names the findings' subject (by its everyday
noun, its specific name or both; hedged with "what may be" where the findings are unsure, and
optionally where they are sure), then none, some or all of their other likely nouns ("or maybe a
palace") in order, each once, then none, some or all of the detected objects, each once and with
its count. Whatever else the decoder says (another noun, a wrong count, a repetition, a word of
the synthetic world) makes the caption ungrounded, and the findings' own words replace it: the
caption the model was trained to give for them.

Answers are not checked this way. The decoder's answers to "what is this?" about photos were
replaced as often (91 of 261, 99 -> 111 right), but the decoder's probability of a replacement
says little about whether it is right: the photo answers' calibration error rose from 0.045 to
0.055 (``scripts/calibrate.py``, out-of-fold), over the 0.05 the confidence promises.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np

from mmllm.data.recognition_text import Reading, article, caption, maybe, object_list, read_rows

MAX_OBJECT_KINDS = 8  # more kinds of object than this: all of them or none (2^8 subsets at most)


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
    alternatives = reading.alternatives
    kinds = list(reading.objects)
    alt_sets = [
        c for k in range(len(alternatives) + 1) for c in itertools.combinations(alternatives, k)
    ]
    if len(kinds) > MAX_OBJECT_KINDS:
        object_sets = [(), tuple(kinds)]
    else:
        object_sets = [c for k in range(len(kinds) + 1) for c in itertools.combinations(kinds, k)]
    for alts in alt_sets:
        for objs in object_sets:
            yield Reading(
                reading.subject,
                alts,
                {c: reading.objects[c] for c in objs},
                reading.nouns,
            )


def grounded_captions(reading: Reading) -> set[str]:
    """Every caption the findings support (``normalized``)."""
    leads = ["a photo of what may be "] + (["a photo of "] if reading.subject.sure else [])
    out = set()
    for part in _sub_readings(reading):
        others = object_list(part.objects, skip=part.subject.basic)
        alternatives = maybe(part)
        joint = "," if alternatives and others else ""
        tail = alternatives + joint + (f" with {others}" if others else "")
        for lead in leads:
            for phrase in subject_phrases(reading):
                out.add(normalized(lead + phrase + tail))
    return out


def grounded_caption(text: str, rows: np.ndarray) -> str | None:
    """None when the caption ``text`` of one photo is grounded in its recognition ``rows``
    ``(K, 6)``; else the findings' own caption. None too when the rows name nothing to check
    against."""
    try:
        reading = read_rows(rows)
    except ValueError:  # neither a class nor a sure object: nothing to check against
        return None
    return None if normalized(text) in grounded_captions(reading) else caption(reading)
