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

import shutil
from pathlib import Path

import torch
from safetensors import safe_open

from encoders.ctranslate2 import patch_ctranslate2, read_ctranslate2
from encoders.disk_cache import cached, file_digest

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


def adapted_model_folder(base: Path, adapter: Path) -> Path:
    """A CTranslate2 Whisper folder: ``base`` with ``adapter`` merged, made once and kept in
    the cache (``encoders.disk_cache``), named by the hashes of the weights and the adapter."""

    def build(folder: Path) -> None:
        folder.mkdir()
        factors, scale = read_adapter(adapter)
        replacements = merged_variables(read_ctranslate2(base / "model.bin"), factors, scale)
        patch_ctranslate2(base / "model.bin", folder / "model.bin", replacements)
        for name in MODEL_FILES:
            if (base / name).is_file():
                shutil.copyfile(base / name, folder / name)

    return cached(f"whisper-{file_digest(base / 'model.bin', adapter)}", build)
