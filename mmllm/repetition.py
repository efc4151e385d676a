"""Repetition controls for generation: the next token may not make the text degenerate.

Off their domain, small models loop: "squaresquare", "one one one", "nononono...". The guard
stops that at the token that would make the loop, the cases ``mmllm.eval.degenerate`` counts,
and leaves every other choice alone:

- **loops**: a token that would end a third copy, back to back, of a run of tokens
  (``a b a b a`` + ``b``);
- **words**, on the decoded text: a piece that would glue a word to itself
  (``"square" + "square"``, ``"nono" + "no"``) or end a third copy, back to back, of a phrase
  of up to eight words (``"one one" + " one"``; punctuation between copies does not count).

A repeated n-gram anywhere is not a loop: synthetic captions repeat ", a large green" with
other shapes. transformers' ``no_repeat_ngram_size`` is there too (``no_repeat_ngram``), off
by default: at 4 it changed 11 of mmllm-tiny's 315 held-out captions, 0.6 points of
caption attributes.

``RepetitionGuard.mask`` is applied to each step's logits before the pick (greedy, sampling or
beams alike). A text the model would have written without looping is unchanged: only tokens
that start a repetition are masked, and only the ``check_top`` most likely ones are decoded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch

LOOP_PERIOD = 16  # longest looping run of tokens looked for
LOOP_WORDS = 8  # longest looping phrase looked for, in words (as mmllm.eval.degenerate)
CHECK_TOP = 8  # candidates per row that the word rules decode
WORD = re.compile(r"[a-z0-9']+")
LAST_LETTERS, FIRST_LETTERS = re.compile(r"[^\W\d_]+$"), re.compile(r"[^\W\d_]+")
DOUBLED = re.compile(r"([^\W\d_]{3,})\1")  # three letters or more, twice in a row
# real words made of one piece twice
DOUBLED_WORDS = {"couscous", "murmur", "bonbon", "tartar", "booboo", "tomtom", "dumdum", "tsetse"}


def glued_word(word: str) -> bool:
    """Whether ``word`` (lower case) is a piece glued to itself: three letters or more twice
    or more ("squaresquare"), or two letters three times or more ("nonono")."""
    twice = re.fullmatch(r"([^\W\d_]{3,})\1+", word) and word not in DOUBLED_WORDS
    return bool(twice or re.search(r"([^\W\d_]{2,})\1{2,}", word))


def glues_word_to_itself(text: str, piece: str) -> bool:
    """Whether ``piece`` continues ``text``'s last word into a glued word (``glued_word``), or
    starts to: a piece that repeats the word's first three letters or more
    (``"a red square" + "squ"``), or completes such a copy (``"squaresq" + "uare"``)."""
    word, start = LAST_LETTERS.search(text), FIRST_LETTERS.match(piece)
    if word is None or start is None:
        return False
    word, start = word.group(0).lower(), start.group(0).lower()
    if glued_word(word + start) and not glued_word(word):
        return True
    if DOUBLED.search(word + start) and not DOUBLED.search(word):
        return True  # "squaresq" + "uare", "circlelarge" + "large"
    n = min(len(word), len(start))
    return n >= 3 and word[:n] == start[:n]


def repeats_thrice(words: Sequence[str], end: int, n: int) -> bool:
    """Whether ``words[end - 3n : end]`` is one phrase of ``n`` words three times."""
    if end < 3 * n:
        return False
    return words[end - n : end] == words[end - 2 * n : end - n] == words[end - 3 * n : end - 2 * n]


def makes_a_loop(text: str, piece: str, longest: int = LOOP_WORDS) -> bool:
    """Whether ``text + piece`` ends with a phrase of 1 to ``longest`` words three times back
    to back ("one one one", "a red square, a red square, a red square") that ``text`` did not
    end with (punctuation between the copies does not count)."""
    before = WORD.findall(text.lower())
    after = WORD.findall((text + piece).lower())
    if after == before:
        return False
    return any(repeats_thrice(after, len(after), n) for n in range(1, longest + 1))


def banned_ngram_ids(ids: Sequence[int], n: int) -> set[int]:
    """The tokens that would complete an n-gram already in ``ids`` (``n`` >= 1)."""
    if n < 1 or len(ids) < n:
        return set()
    prefix = tuple(ids[len(ids) - n + 1 :])
    return {ids[i + n - 1] for i in range(len(ids) - n + 1) if tuple(ids[i : i + n - 1]) == prefix}


def looping_ids(ids: Sequence[int], longest: int = LOOP_PERIOD) -> set[int]:
    """The tokens that would end a third copy, back to back, of the last ``p`` tokens
    (``p`` <= ``longest``): ``[a, b, a, b, a]`` bans ``b``."""
    out = set()
    for p in range(1, longest + 1):
        if len(ids) < 3 * p - 1:
            break
        tail = [*ids[len(ids) - 3 * p + 1 :], ids[len(ids) - p]]  # with the candidate
        if tail[:p] == tail[p : 2 * p] == tail[2 * p :]:
            out.add(ids[len(ids) - p])
    return out


class RepetitionGuard:
    """Masks, per row, the next tokens that would start a repetition.

    ``decode`` turns token ids into text (the tokenizer's); ``loops`` the loop and word rules;
    ``no_repeat_ngram`` > 0 also bans repeated n-grams. Call ``mask`` with each step's logits and
    then ``append`` with the picked ids; ``reorder`` follows beams to their parents."""

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        loops: bool = True,
        no_repeat_ngram: int = 0,
        skip_ids: Sequence[int] = (),
        check_top: int = CHECK_TOP,
    ):
        self.decode = decode
        self.no_repeat_ngram = no_repeat_ngram
        self.loops = loops
        self.skip_ids = set(skip_ids)  # end and padding: not text
        self.check_top = check_top
        self.history: list[list[int]] = []

    @property
    def active(self) -> bool:
        return self.no_repeat_ngram > 0 or self.loops

    def start(self, rows: int) -> None:
        self.history = [[] for _ in range(rows)]

    def append(self, next_ids: torch.Tensor) -> None:
        """next_ids ``(rows,)``: the tokens just picked."""
        for row, token in enumerate(next_ids.tolist()):
            if token not in self.skip_ids:
                self.history[row].append(token)

    def reorder(self, parent: torch.Tensor) -> None:
        """Beam search: row ``i`` now continues row ``parent[i]``."""
        self.history = [list(self.history[p]) for p in parent.tolist()]

    def banned(self, row: int, candidates: Sequence[int]) -> set[int]:
        """Of ``candidates`` (most likely first), the ones row ``row`` may not pick."""
        ids = self.history[row]
        out = banned_ngram_ids(ids, self.no_repeat_ngram) if self.no_repeat_ngram else set()
        if self.loops and ids:
            out |= looping_ids(ids)
            text = self.decode(ids)
            for token in candidates:
                if token in out or token in self.skip_ids:
                    continue
                piece = self.decode([*ids, token])[len(text) :]
                if glues_word_to_itself(text, piece) or makes_a_loop(text, piece):
                    out.add(token)
        return out

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """logits ``(rows, V)`` -> the same with each row's banned tokens at ``-inf``."""
        if not self.active:
            return logits
        top = logits.topk(min(self.check_top, logits.shape[-1]), dim=-1).indices.tolist()
        rows, cols = [], []
        for row, candidates in enumerate(top):
            for token in self.banned(row, candidates):
                rows.append(row)
                cols.append(token)
        if not rows:
            return logits
        logits = logits.clone()
        logits[rows, cols] = float("-inf")
        return logits
