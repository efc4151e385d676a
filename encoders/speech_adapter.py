"""A low-rank adapter for Whisper's decoder, merged into its CTranslate2 weights.

The adapter is trained in torch on Whisper run by transformers (``scripts/train_speech_adapter.py``)
as LoRA factors (Hu et al., 2021) on each decoder layer's attention and MLP projections, stored
by their transformers names: ``decoder.layers.{i}.{self_attn,encoder_attn}.{q,k,v,out}_proj``
and ``decoder.layers.{i}.fc1/fc2``, each with ``lora_a`` ``(r, in)`` and ``lora_b`` ``(out, r)``
and a ``scale`` in the file's metadata. CTranslate2 fuses some projections (self-attention q/k/v,
cross-attention k/v), so ``merged_variables`` adds each ``scale * B @ A`` to its rows of the fused
tensor. ``adapted_model_folder`` writes the merged model once into a cache folder named by the
hashes of the weights and the adapter, and later calls reuse it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open

from encoders.ctranslate2 import patch_ctranslate2, read_ctranslate2

# transformers' module in a decoder layer -> (CTranslate2 variable in that layer, part, parts)
FUSED = {
    "self_attn.q_proj": ("self_attention/linear_0", 0, 3),
    "self_attn.k_proj": ("self_attention/linear_0", 1, 3),
    "self_attn.v_proj": ("self_attention/linear_0", 2, 3),
    "self_attn.out_proj": ("self_attention/linear_1", 0, 1),
    "encoder_attn.q_proj": ("attention/linear_0", 0, 1),
    "encoder_attn.k_proj": ("attention/linear_1", 0, 2),
    "encoder_attn.v_proj": ("attention/linear_1", 1, 2),
    "encoder_attn.out_proj": ("attention/linear_2", 0, 1),
    "fc1": ("ffn/linear_0", 0, 1),
    "fc2": ("ffn/linear_1", 0, 1),
}
CACHE_ENV = "MMLLM_CACHE"
MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def read_adapter(path: str | Path) -> tuple[dict[str, torch.Tensor], float]:
    """The LoRA factors of an adapter file by name, and their scale."""
    with safe_open(str(path), framework="pt") as f:
        scale = float((f.metadata() or {}).get("scale", "1.0"))
        return {k: f.get_tensor(k) for k in f.keys()}, scale  # noqa: SIM118 (not a dict)


def merged_variables(
    variables: dict[str, torch.Tensor], factors: dict[str, torch.Tensor], scale: float
) -> dict[str, torch.Tensor]:
    """The CTranslate2 decoder weights the adapter changes, with its update added (fp32)."""
    merged: dict[str, torch.Tensor] = {}
    for key in sorted(k for k in factors if k.endswith(".lora_a")):
        module = key.removesuffix(".lora_a")  # decoder.layers.{i}.{name}
        _, _, layer, name = module.split(".", 3)
        if name not in FUSED:
            raise ValueError(f"the adapter names an unknown projection {module}")
        target, part, parts = FUSED[name]
        variable = f"decoder/layer_{layer}/{target}/weight"
        weight = merged.get(variable, variables[variable].float()).clone()
        rows = weight.shape[0] // parts
        update = scale * factors[f"{module}.lora_b"].float() @ factors[key].float()
        weight[part * rows : (part + 1) * rows] += update
        merged[variable] = weight
    return merged


def cache_root() -> Path:
    """Where converted models are kept: ``$MMLLM_CACHE``, else the user's cache folder."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mmllm"


def _digest(*files: Path) -> str:
    h = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def adapted_model_folder(base: Path, adapter: Path) -> Path:
    """A CTranslate2 Whisper folder: ``base`` with ``adapter`` merged, made once and cached
    (written to a temporary folder and renamed, so concurrent callers never see half a model)."""
    folder = cache_root() / f"whisper-{_digest(base / 'model.bin', adapter)}"
    if (folder / "model.bin").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".whisper-", dir=folder.parent))
    try:
        factors, scale = read_adapter(adapter)
        replacements = merged_variables(read_ctranslate2(base / "model.bin"), factors, scale)
        patch_ctranslate2(base / "model.bin", work / "model.bin", replacements)
        for name in MODEL_FILES:
            if (base / name).is_file():
                shutil.copyfile(base / name, work / name)
        try:
            work.rename(folder)
        except OSError:  # another process made it first
            if not (folder / "model.bin").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder
