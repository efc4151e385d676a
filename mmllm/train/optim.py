"""The optimiser and its schedule: AdamW with decay on matrices only and per-part learning-rate
factors, and a linear-warmup cosine schedule computed from the step (resuming needs no state)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from mmllm.train.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at ``steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (
        cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    )


def adamw(
    named: Iterable[tuple[str, torch.nn.Parameter]],
    lr: float,
    weight_decay: float,
    fused: bool = False,
    scales: dict[str, float] | None = None,
) -> torch.optim.AdamW:
    """AdamW (betas 0.9/0.95) with weight decay on matrices only (not norms, biases, gates).
    ``scales`` (name prefix -> factor) gives those parameters ``lr * factor``: each group keeps
    its factor as ``lr_scale``, which the schedule multiplies in."""
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for name, param in named:
        factor = next((f for p, f in (scales or {}).items() if name.startswith(p)), 1.0)
        groups.setdefault((param.ndim >= 2, factor), []).append(param)
    return torch.optim.AdamW(
        [
            {"params": ps, "weight_decay": weight_decay if matrix else 0.0, "lr_scale": factor}
            for (matrix, factor), ps in sorted(groups.items())
        ],
        lr=lr,
        betas=(0.9, 0.95),
        fused=fused,
    )
