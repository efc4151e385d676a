"""Degenerate text: a word glued to itself, a word three times in a row, runaway repetition.

The failures users saw from models off their domain: "squaresquare", "one one one",
"nononono...", and a phrase looping until the token limit (a phrase of two to eight words three
times back to back; a list that repeats its pattern with other words, "a large red square, a
large red circle, a large red star", is not a loop). ``degenerate_reason`` names the
first one found, or returns None for clean text.
"""

from __future__ import annotations

import re

from mmllm.repetition import LOOP_WORDS as MAX_PHRASE
from mmllm.repetition import glued_word


def degenerate_reason(text: str) -> str | None:
    """Why ``text`` is degenerate, or None."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    for word in words:
        if glued_word(word):
            return f"word glued to itself: {word!r}"
    for i in range(len(words) - 2):
        if words[i] == words[i + 1] == words[i + 2]:
            return f"word three times in a row: {words[i]!r}"
    for n in range(2, MAX_PHRASE + 1):  # a phrase three times back to back: a loop
        for i in range(len(words) - 3 * n + 1):
            if words[i : i + n] == words[i + n : i + 2 * n] == words[i + 2 * n : i + 3 * n]:
                return f"runaway repetition of {' '.join(words[i : i + n])!r}"
    return None


def is_degenerate(text: str) -> bool:
    return degenerate_reason(text) is not None
