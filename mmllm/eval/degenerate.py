"""Degenerate text: a word glued to itself, a word three times in a row, runaway repetition.

The failures users saw from models off their domain: "squaresquare", "one one one",
"nononono...", and a phrase looping until the token limit (a phrase of two to eight words three
times back to back; a list that repeats its pattern with other words, "a large red square, a
large red circle, a large red star", is not a loop). ``degenerate_reason`` names the
first one found, or returns None for clean text.
"""

from __future__ import annotations

from mmllm.repetition import LOOP_WORDS as MAX_PHRASE
from mmllm.repetition import WORD, glued_word, repeats_thrice


def degenerate_reason(text: str) -> str | None:
    """Why ``text`` is degenerate, or None."""
    words = WORD.findall(text.lower())
    for word in words:
        if glued_word(word):
            return f"word glued to itself: {word!r}"
    for end in range(3, len(words) + 1):
        if repeats_thrice(words, end, 1):
            return f"word three times in a row: {words[end - 1]!r}"
    for n in range(2, MAX_PHRASE + 1):  # a phrase three times back to back: a loop
        for end in range(3 * n, len(words) + 1):
            if repeats_thrice(words, end, n):
                return f"runaway repetition of {' '.join(words[end - n : end])!r}"
    return None


def is_degenerate(text: str) -> bool:
    return degenerate_reason(text) is not None
