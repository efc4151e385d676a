"""Which vocabulary ids spell each recognized label, and how each one joins the text before it.

The copy path (``mmllm.model.recognition``) puts a recognized label's score on the ids of its words.
A word has two first pieces in a byte-level BPE: " cat" after a space and "cat" glued to what
comes before. Biasing both at every step makes the decoder write "ancat" after "an" or
"a cat ( cat)" inside brackets. So each id of a label is given a kind:

- ``SPACED``: the first piece of the word after a space; it follows a word or punctuation;
- ``GLUED``: the first piece of the word without a space; it follows an opener (the prompt's end,
  "(", a quote, a hyphen), where a new word starts with no space;
- ``INNER``: any later piece of a word spelt in several; it may follow anything.

Each vocabulary token also gets flags towards the next word (``word_joins``): whether a word
after it starts glued, whether it is the article "a" or "an", whether it starts with a vowel,
whether it is a label's plural, so that after "an" the copy path offers "apple" and not "cat",
and after "a" it offers "cow" and not "cows". ``wire_copy_path`` stores the kinds
and the flags on the model's ``RecognitionTokens``.
"""

from __future__ import annotations

import torch

from encoders.recognizers import COCO_OFFSET, N_LABELS
from mmllm.data.label_words import coco_words, imagenet_words
from mmllm.model.recognition import (
    ARTICLE_A,
    ARTICLE_AN,
    GLUED,
    INNER,
    OPENS,
    PLURAL,
    SPACED,
    VOWEL,
    RecognitionTokens,
)
from mmllm.tokenizer import Tokenizer

OPENING_CHARACTERS = "([{\"'/-\n"  # after these a word starts with no space


def label_forms() -> list[list[str]]:
    """Each label's texts as a caption may write them: the everyday noun and the specific name
    ("a dog (Labrador retriever)"), and a COCO object's plural."""
    forms: list[list[str]] = [[] for _ in range(N_LABELS)]
    for label, word in enumerate(imagenet_words()):
        forms[label] = [word.basic, word.name]
    for cid, word in coco_words().items():
        forms[COCO_OFFSET + cid] = [word.name, word.basic, word.plural]
    return forms


def label_copy_ids(tokenizer: Tokenizer) -> list[list[int]]:
    """Each label's word-piece ids, every form after a space and glued (the ``label_words``
    table ``mmllm.model.recognition.label_word_ids`` makes)."""
    return [
        [i for text in texts for i in tokenizer.encode(" " + text) + tokenizer.encode(text)]
        for texts in label_forms()
    ]


def copy_word_kinds(tokenizer: Tokenizer, label_words: torch.Tensor) -> torch.Tensor:
    """The kind of each id in ``label_words`` ``(N_LABELS, L)`` (-1 padded) -> ``(N_LABELS, L)``
    int8: ``SPACED`` or ``GLUED`` where the id starts one of the label's forms, else ``INNER``."""
    kinds = torch.full(label_words.shape, INNER, dtype=torch.int8)
    for label, texts in enumerate(label_forms()[: label_words.shape[0]]):
        spaced = {tokenizer.encode(" " + text)[0] for text in texts if text}
        glued = {tokenizer.encode(text)[0] for text in texts if text}
        for slot, token in enumerate(label_words[label].tolist()):
            if token in spaced and token not in glued:
                kinds[label, slot] = SPACED
            elif token in glued and token not in spaced:
                kinds[label, slot] = GLUED
    return kinds


def word_joins(tokenizer: Tokenizer) -> torch.Tensor:
    """``(V,)`` uint8 flags of each token towards the next word: OPENS (a word after it starts
    without a space: special tokens, which decode to nothing, and text ending in an opening
    character or a space), ARTICLE_A / ARTICLE_AN (the article, any case), VOWEL (its word
    starts with a vowel letter, the rule the training texts' articles follow), PLURAL (its
    word is a label's plural and no label's singular: "cows", not "sheep")."""
    texts = tokenizer.backend.decode_batch([[i] for i in range(tokenizer.vocab_size)])
    words = [*imagenet_words(), *coco_words().values()]
    plurals = {w.plural for w in words} - {w.basic for w in words} - {w.name for w in words}
    flags = []
    for text in texts:
        word = text.strip().lower()
        flag = OPENS if not text or text[-1] in OPENING_CHARACTERS or text[-1].isspace() else 0
        flag |= ARTICLE_A if word == "a" else ARTICLE_AN if word == "an" else 0
        flag |= VOWEL if word[:1] in tuple("aeiou") else 0
        flag |= PLURAL if word in plurals else 0
        flags.append(flag)
    return torch.tensor(flags, dtype=torch.uint8)


def wire_copy_path(recognition: RecognitionTokens, tokenizer: Tokenizer) -> None:
    """Give ``recognition``'s copy path the word kinds and joins of ``tokenizer``."""
    kinds = copy_word_kinds(tokenizer, recognition.label_words.cpu())
    recognition.set_word_forms(kinds, word_joins(tokenizer))
