"""Exact-resume training state, without pickle: tensors in safetensors, the rest in JSON.

Saved beside the model in the checkpoint folder: the AdamW moments and step counts, the torch
RNG states, and the step reached (which, with the seed, fixes the data position).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mmllm.errors import CheckpointError

STATE_TENSORS, STATE_JSON = "train_state.safetensors", "train_state.json"


def save_train_state(folder: Path, optimizer: torch.optim.Optimizer, info: dict[str, Any]) -> None:
    """Write optimizer tensors + RNG states to ``folder`` (``info`` must be JSON-serialisable)."""
    tensors: dict[str, torch.Tensor] = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    opt = optimizer.state_dict()
    for index, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    save_file(tensors, folder / STATE_TENSORS)
    groups = [{k: v for k, v in g.items()} for g in opt["param_groups"]]
    (folder / STATE_JSON).write_text(json.dumps({"info": info, "param_groups": groups}, indent=1))


def load_train_state(folder: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore what ``save_train_state`` wrote; returns its ``info``."""
    if not (folder / STATE_TENSORS).is_file() or not (folder / STATE_JSON).is_file():
        raise CheckpointError(f"{folder} has no training state to resume from")
    tensors = load_file(folder / STATE_TENSORS)
    meta = json.loads((folder / STATE_JSON).read_text())
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.cpu"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    return meta["info"]
