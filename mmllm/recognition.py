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


def row_features(rows: torch.Tensor) -> torch.Tensor:
    """rows ``(..., 6)`` -> score, box and kind features ``(..., 6 + 40)``."""
    values = rows[..., 1:6]  # (..., 5): score, x1, y1, x2, y2 in [0, 1]
    kind = (rows[..., :1] >= COCO_OFFSET).to(rows.dtype)  # 1: a detected object
    scales = 2.0 ** torch.arange(N_FREQS, device=rows.device, dtype=rows.dtype) * math.pi
    angles = (values[..., None] * scales).flatten(-2)  # (..., 5 * N_FREQS)
    return torch.cat([values, kind, angles.sin(), angles.cos()], -1)


class RecognitionTokens(nn.Module):
    """rows ``(n, K, 6)`` -> tokens ``(n, K, D)``: label embedding plus an MLP of it, the
    score and the box."""

    def __init__(self, dim: int):
        super().__init__()
        self.labels = nn.Embedding(N_LABELS, dim)
        nn.init.normal_(self.labels.weight, std=0.02)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim + 6 + 10 * N_FREQS, dim)
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        label = rows[..., 0].round().long().clamp(0, N_LABELS - 1)  # (n, K)
        words = self.labels(label)  # (n, K, D)
        hidden = torch.cat([self.norm(words), row_features(rows).to(words.dtype)], -1)
        return words + self.fc2(F.gelu(self.fc1(hidden)))


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
