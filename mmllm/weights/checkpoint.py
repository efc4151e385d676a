"""Checkpoint folders: ``config.json`` + ``model.safetensors`` + ``tokenizer.json`` + ``README.md``
(+ ``tokenizer_roles.json`` when the tokenizer is a pretrained LM's, see ``mmllm.tokenizer``).

Saving is atomic: everything is written to a temporary sibling folder that is renamed into place
only when complete, so an interrupted save never leaves a half-written checkpoint (the previous
one survives). Loading reads safetensors only (never pickle) and is strict: any missing,
unexpected or mis-shaped tensor is reported by name in a ``CheckpointError``.

A config with a ``base`` section stores only the tensors its pretrained parts do not provide;
those parts are rebuilt from their references on load (``mmllm.weights.base_weights``).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mmllm.config import MMConfig
from mmllm.errors import CheckpointError, ConfigError
from mmllm.model.multimodal import MultimodalLM
from mmllm.tokenizer import Tokenizer
from mmllm.weights.base_weights import load_trained, trained_state
from mmllm.weights.copy_words import wire_copy_path

CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, CARD_FILE = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "README.md",
)
DEFAULT_CHECKPOINT = "mmllm-real"
RUN_CHECKPOINT = "checkpoint"  # ``mmllm train --out RUN`` saves into RUN/checkpoint


SOURCE_ROOT = Path(__file__).resolve().parents[2]  # mmllm/weights/checkpoint.py -> the tree


def checkpoint_dirs() -> list[Path]:
    """Where shipped checkpoints live: the source tree, then the installed data folder."""
    return [
        SOURCE_ROOT / "checkpoints",
        Path(sys.prefix) / "share" / "mmllm" / "checkpoints",
    ]


def resolve_checkpoint(path: str | Path | None) -> Path:
    """The checkpoint folder that ``path`` names (default: the shipped ``mmllm-real``).

    Accepted: a checkpoint folder (it holds ``config.json``); a training run's folder (``mmllm
    train --out RUN``: its ``RUN/checkpoint``, or else the latest ``RUN/*/checkpoint`` of a
    recipe's stages); the bare name of a shipped checkpoint. Anything else raises
    ``CheckpointError`` saying where a checkpoint was looked for."""
    name = Path(path if path is not None else DEFAULT_CHECKPOINT)
    if name.is_dir():
        if (name / CONFIG_FILE).is_file():
            return name
        if (name / RUN_CHECKPOINT / CONFIG_FILE).is_file():
            return name / RUN_CHECKPOINT
        stages = [f.parent for f in name.glob(f"*/{RUN_CHECKPOINT}/{CONFIG_FILE}")]
        if stages:
            return max(stages, key=lambda f: ((f / CONFIG_FILE).stat().st_mtime, str(f)))
        raise CheckpointError(
            f"{name} is not a checkpoint folder: no {CONFIG_FILE} in it, nor in "
            f"{name / RUN_CHECKPOINT} (where `mmllm train --out {name}` saves), nor in any "
            f"{name}/*/{RUN_CHECKPOINT}"
        )
    if len(name.parts) == 1:
        for root in checkpoint_dirs():
            if (root / name / CONFIG_FILE).is_file():
                return root / name
    roots = [root for root in checkpoint_dirs() if root.is_dir()]
    shipped = sorted({f.name for root in roots for f in root.iterdir() if f.is_dir()})
    raise CheckpointError(
        f"no checkpoint folder or shipped checkpoint named {str(name)!r} (a folder path, a run "
        f"folder, or one of: {', '.join(shipped) or 'none shipped'})"
    )


def save_checkpoint(
    model: MultimodalLM,
    path: str | Path,
    tokenizer: Tokenizer | None = None,
    card: str | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``model`` (and tokenizer, model card) to folder ``path`` atomically.

    ``extra(folder)`` may write more files (e.g. training state) into the folder before it is
    moved into place, so they are part of the same atomic save.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a checkpoint is an ordinary folder
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        config, state = trained_state(model, state)  # less the unchanged base parts, if any
        config.save(tmp / CONFIG_FILE)
        save_file(state, tmp / WEIGHTS_FILE, metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save(tmp / TOKENIZER_FILE)
        if card is not None:
            (tmp / CARD_FILE).write_text(card)
        if extra is not None:
            extra(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def load_model(
    path: str | Path, device: torch.device | str | None = None, config: MMConfig | None = None
) -> MultimodalLM:
    """Build the model ``path/config.json`` describes and load its weights strictly; a model
    that reads recognitions gets its copy path's word forms from the tokenizer beside them.
    ``config``: build this config instead, one that needs the same weights (e.g. the stored
    one ``with_position_tables``)."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise CheckpointError(f"{path} is not a checkpoint folder: no {CONFIG_FILE}")
    if config is None:
        try:
            config = MMConfig.load(path / CONFIG_FILE)
        except ConfigError as err:
            raise CheckpointError(f"{path}: {err}") from err
    model = MultimodalLM(config)
    try:
        state = load_file(path / WEIGHTS_FILE)
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"cannot read weights {path / WEIGHTS_FILE}: {err}") from err
    if config.base is not None:  # pretrained parts from their references, then the rest
        load_trained(model, state, path, source=str(path / WEIGHTS_FILE))
    else:
        check_state_dict(model, state, source=str(path / WEIGHTS_FILE))
        model.load_state_dict(state, strict=True)
    if model.recognition is not None and (path / TOKENIZER_FILE).is_file():
        wire_copy_path(model.recognition, load_tokenizer(path))
    return model.to(device) if device is not None else model


def load_tokenizer(path: str | Path) -> Tokenizer:
    file = Path(path) / TOKENIZER_FILE
    if not file.is_file():
        raise CheckpointError(f"{path} has no {TOKENIZER_FILE}")
    return Tokenizer.load(file)


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise ``CheckpointError`` naming every missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    problems = []
    for title, names in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("mis-shaped", misshaped),
    ):
        if names:
            shown = ", ".join(names[:10]) + (
                f" (+{len(names) - 10} more)" if len(names) > 10 else ""
            )
            problems.append(f"{len(names)} {title}: {shown}")
    if problems:
        raise CheckpointError(f"{source} does not match the model config; " + "; ".join(problems))
