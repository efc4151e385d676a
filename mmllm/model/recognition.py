"""Recognition rows -> tokens in the shared space, next to an image's cell tokens.

A row is ``(label, score, x1, y1, x2, y2)`` (``encoders.recognizers``). Its token is the
label's word embedding, as ConSE (Norouzi et al., 2014) places a class among word vectors, plus
an MLP of that embedding with the score and box (Fourier features), as Oscar/VinVL pair object
tags with region features. The label table starts as the language model's own input embedding
of each label's words (``label_table_from_words``), so a label the decoder has never been
trained on still lands near its name; the table is stored with the model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from encoders.recognizers import COCO_OFFSET, N_LABELS

N_FREQS = 4
LABEL_WORDS = 16  # word-piece ids kept per label for the copy path
COPY_SCALE_INIT = 6.0  # softplus(6) ~ 6 logits for a sure label, when the gate is open
COPY_GATE_INIT = -2.0  # sigmoid(-2) ~ 0.12: the gate starts mostly shut
# how a label's word-piece id joins the text before it (mmllm.weights.copy_words): the word bias has
# one slice per kind, and the token before each position picks SPACED or GLUED
INNER, SPACED, GLUED = 0, 1, 2
# what each vocabulary token is to the word after it (``word_joins``, flags): a word after it
# starts glued; it is the article "a" or "an"; it begins a word with a vowel letter; its word is
# a label's plural (which no article takes)
OPENS, ARTICLE_A, ARTICLE_AN, VOWEL, PLURAL = 1, 2, 4, 8, 16


def row_features(rows: torch.Tensor) -> torch.Tensor:
    """rows ``(..., 6)`` -> score, box and kind features ``(..., 6 + 40)``."""
    values = rows[..., 1:6]  # (..., 5): score, x1, y1, x2, y2 in [0, 1]
    kind = (rows[..., :1] >= COCO_OFFSET).to(rows.dtype)  # 1: a detected object
    scales = 2.0 ** torch.arange(N_FREQS, device=rows.device, dtype=rows.dtype) * math.pi
    angles = (values[..., None] * scales).flatten(-2)  # (..., 5 * N_FREQS)
    return torch.cat([values, kind, angles.sin(), angles.cos()], -1)


class RecognitionTokens(nn.Module):
    """rows ``(n, K, 6)`` -> tokens ``(n, K, D)``: label embedding plus an MLP of it, the
    score and the box.

    It also gives the decoder a copy path for the labels' words (the pointer-generator idea,
    See et al., 2017, in its simplest form): ``word_bias`` puts each row's score on the
    vocabulary ids of its label's words (``label_words``, set when the model is built), and
    ``copy_gate`` reads a final hidden state and says how much of that bias the next token's
    logits get. Cross-attention learns slowly to spell a new word out of a vector; this lets the
    model name any recognized label from its first training steps. Each id has a kind
    (``word_kinds``: INNER, SPACED or GLUED, set by ``mmllm.weights.copy_words``), and the
    bias keeps one slice per kind, so a word's glued form is offered only after an opener
    (``word_joins``) and its spaced form only after anything else, and after "a" or "an" only
    the singular words that agree with it (the rule the training texts follow)."""

    def __init__(self, dim: int):
        super().__init__()
        self.labels = nn.Embedding(N_LABELS, dim)
        nn.init.normal_(self.labels.weight, std=0.02)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim + 6 + 10 * N_FREQS, dim)
        self.fc2 = nn.Linear(dim, dim)
        # (N_LABELS, LABEL_WORDS): each label's word-piece ids, -1 padded (label_word_ids)
        self.register_buffer("label_words", torch.full((N_LABELS, LABEL_WORDS), -1))
        self.copy_scale = nn.Parameter(torch.tensor(COPY_SCALE_INIT))
        self.copy_gate = nn.Linear(dim, 1)
        nn.init.zeros_(self.copy_gate.weight)
        nn.init.constant_(self.copy_gate.bias, COPY_GATE_INIT)
        # derived from the tokenizer when the model is loaded (set_word_forms), not stored:
        # each label_words id's kind (N_LABELS, LABEL_WORDS), and each vocabulary id's flags
        # towards the next word (V,)
        self.register_buffer(
            "word_kinds", torch.zeros(N_LABELS, LABEL_WORDS, dtype=torch.int8), False
        )
        self.register_buffer("word_joins", torch.zeros(0, dtype=torch.uint8), False)

    def set_word_forms(self, kinds: torch.Tensor, joins: torch.Tensor) -> None:
        """Each ``label_words`` id's kind ``(N_LABELS, LABEL_WORDS)`` and each vocabulary id's
        flags ``(V,)`` (OPENS, ARTICLE_A, ARTICLE_AN, VOWEL; ``copy_words.word_joins`` in
        ``mmllm.weights``)."""
        device = self.label_words.device
        self.word_kinds = kinds.to(device=device, dtype=torch.int8)
        self.word_joins = joins.to(device=device, dtype=torch.uint8)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        label = rows[..., 0].round().long().clamp(0, N_LABELS - 1)  # (n, K)
        words = self.labels(label)  # (n, K, D)
        hidden = torch.cat([self.norm(words), row_features(rows).to(words.dtype)], -1)
        return words + self.fc2(F.gelu(self.fc1(hidden)))

    def word_bias(
        self,
        rows: torch.Tensor,
        mask: torch.Tensor,
        image_index: torch.Tensor,
        batch_size: int,
        vocab_size: int,
    ) -> torch.Tensor:
        """rows ``(n, K, 6)`` with mask ``(n, K)`` of the images of samples ``image_index``
        ``(n,)`` -> each sample's bias over the vocabulary per kind of id ``(B, 3, V)``: the
        sum, over its rows, of ``softplus(copy_scale) * score`` on every word-piece id of the
        row's label, in the slice of that id's kind (``choose_word_bias`` picks per token)."""
        label = rows[..., 0].round().long().clamp(0, N_LABELS - 1)  # (n, K)
        weight = F.softplus(self.copy_scale) * rows[..., 1].float() * mask  # (n, K)
        ids = self.label_words[label]  # (n, K, L)
        kinds = self.word_kinds[label].long()  # (n, K, L)
        valid = (ids >= 0) & (ids < vocab_size)
        values = (weight[..., None] * valid).flatten()
        sample = image_index.to(ids.device)[:, None, None].expand_as(ids)
        flat = ((sample * 3 + kinds) * vocab_size + ids.clamp(0, vocab_size - 1)).flatten()
        bias = weight.new_zeros(batch_size * 3 * vocab_size)
        return bias.scatter_add(0, flat, values).view(batch_size, 3, vocab_size)


def choose_word_bias(
    bias: torch.Tensor, previous: torch.Tensor, joins: torch.Tensor
) -> torch.Tensor:
    """Per-kind word bias ``(..., 3, V)`` and the token before each position ``(...)`` -> the
    bias ``(..., V)``: the INNER slice plus GLUED after a token that OPENS a word, else SPACED;
    after the article "a" (or "an") only the spaced singular words without (or with) a VOWEL
    first (``joins`` ``(V,)``: each token's flags)."""
    inner, spaced, glued = bias.unbind(-2)
    if joins.numel() == 0:  # no kinds known: every id is INNER, the other slices are 0
        return inner + spaced
    flags = joins[previous.clamp(0, joins.shape[0] - 1)].long()[..., None]  # (..., 1)
    vowel = (joins.long() & VOWEL).bool()  # (V,)
    singular = ~(joins.long() & PLURAL).bool()  # (V,)
    agrees = torch.where(
        (flags & ARTICLE_A).bool(),
        ~vowel & singular,
        torch.where((flags & ARTICLE_AN).bool(), vowel & singular, True),
    )  # (..., V)
    return inner + torch.where((flags & OPENS).bool(), glued, spaced * agrees)


@torch.no_grad()
def label_table_from_words(
    embed_tokens: torch.Tensor, token_ids: list[list[int]], scale: float = 1.0
) -> torch.Tensor:
    """The mean input embedding of each label's word pieces: ``embed_tokens`` ``(V, D)`` and
    ``token_ids[label]`` -> ``(N_LABELS, D)``; labels without words get zeros."""
    table = embed_tokens.new_zeros(N_LABELS, embed_tokens.shape[1])
    for label, ids in enumerate(token_ids[:N_LABELS]):
        if ids:
            table[label] = embed_tokens[torch.tensor(ids)].mean(0) * scale
    return table


def label_word_ids(token_ids: list[list[int]]) -> torch.Tensor:
    """Each label's word-piece ids ``token_ids[label]`` -> the ``label_words`` table
    ``(N_LABELS, LABEL_WORDS)`` (first ids kept, -1 padded)."""
    table = torch.full((N_LABELS, LABEL_WORDS), -1, dtype=torch.long)
    for label, ids in enumerate(token_ids[:N_LABELS]):
        unique = list(dict.fromkeys(ids))[:LABEL_WORDS]
        table[label, : len(unique)] = torch.tensor(unique, dtype=torch.long)
    return table
