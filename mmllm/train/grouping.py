"""Rows of a right-padded batch grouped by length, so each group pads only to its own longest.

A training batch of the synthetic world mixes one-word answers with captions: padded to its
longest row, half of the decoder's text positions are padding (48% real on ``synthetic:train``).
Sorted by length and cut into a few groups, each group is padded only to its own longest row.
"""

from __future__ import annotations

import torch


def length_groups(lengths: torch.Tensor, groups: int) -> list[torch.Tensor]:
    """Rows of ``lengths`` ``(B,)`` (0: the row needs no computing) in at most ``groups`` groups
    of consecutive lengths, cut where the positions computed (rows x their group's longest) are
    fewest. Returns each group's row indices, shortest group first; rows of length 0 in none."""
    order = torch.argsort(lengths, stable=True)
    order = order[lengths[order] > 0]
    sizes = lengths[order].tolist()  # ascending
    n, groups = len(sizes), max(1, min(groups, len(sizes)))
    if n == 0:
        return []
    # best[g][j]: fewest positions for the first j rows in g groups; a group [i, j) costs
    # (j - i) * sizes[j - 1]
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(groups + 1)]
    cut = [[0] * (n + 1) for _ in range(groups + 1)]
    best[0][0] = 0
    for g in range(1, groups + 1):
        for j in range(1, n + 1):
            for i in range(g - 1, j):
                cost = best[g - 1][i] + (j - i) * sizes[j - 1]
                if cost < best[g][j]:
                    best[g][j], cut[g][j] = cost, i
    g = min(range(1, groups + 1), key=lambda k: (best[k][n], k))  # fewest groups on a tie
    bounds, j = [], n
    while g > 0:
        bounds.append((cut[g][j], j))
        j, g = cut[g][j], g - 1
    return [order[i:j] for i, j in reversed(bounds)]
