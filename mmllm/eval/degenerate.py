"""Degenerate text: a word glued to itself, a word three times in a row, runaway repetition.

The failures users saw from models off their domain: "squaresquare", "one one one",
"nononono...", and a phrase looping until the token limit. ``degenerate_reason`` names the
first one found, or returns None for clean text.
"""

from __future__ import annotations

import re
from collections import Counter

# real words made of one piece twice
DOUBLED_WORDS = {"couscous", "murmur", "bonbon", "tartar", "booboo", "tomtom", "dumdum", "tsetse"}


def degenerate_reason(text: str) -> str | None:
    """Why ``text`` is degenerate, or None."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    for word in words:
        twice = re.fullmatch(r"([a-z]{3,})\1+", word) and word not in DOUBLED_WORDS
        if twice or re.search(r"([a-z]{2,})\1{2,}", word):
            return f"word glued to itself: {word!r}"
    for i in range(len(words) - 2):
        if words[i] == words[i + 1] == words[i + 2]:
            return f"word three times in a row: {words[i]!r}"
    for n in (2, 3, 4):
        grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        if grams:
            gram, count = grams.most_common(1)[0]
            if count >= 3 and count * n >= 0.5 * len(words):
                return f"runaway repetition of {' '.join(gram)!r} ({count} times)"
    return None


def is_degenerate(text: str) -> bool:
    return degenerate_reason(text) is not None
