"""Llama-family causal LMs (Llama, SmolLM2, Qwen2) from local files into our ``Decoder``.

A Hugging Face folder (``config.json`` + safetensors) is read without transformers; a GGUF file
is read through transformers (``from_pretrained(folder, gguf_file=...)``), which dequantises it,
once: the fp32 result is kept in the cache (``encoders.disk_cache``).
Either way the LM's config becomes a ``DecoderConfig`` and its tensors map onto ours by an
explicit key table. The cross-attention layers the LM lacks keep their fresh init with gates at 0,
so the loaded decoder is exactly the LM until they train. Configurations our decoder cannot
reproduce (another activation, sliding windows, unknown rope scaling...) raise ``ConfigError``;
missing or left-over tensors raise ``CheckpointError`` naming them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from encoders.disk_cache import cached, file_digest
from encoders.pretrained import (
    WeightsError,
    check_shapes,
    map_keys,
    read_hf_config,
    read_hf_weights,
)
from mmllm.config import DecoderConfig, RopeScaling
from mmllm.errors import CheckpointError, ConfigError
from mmllm.model.decoder import Decoder
from mmllm.weights.gpt2 import gpt2_decoder_config, gpt2_state_dict, gpt2_tensor_names

# model_type -> whether q/k/v projections carry a bias (Qwen2 always; Llama per attention_bias)
SUPPORTED = {"llama": False, "qwen2": True}
LAYER_PARAMS = (
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
)
QKV_BIAS = ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias")
# recomputed from the config, never loaded: older checkpoints stored the rotary tables
DERIVED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclass
class HFLanguageModel:
    """A causal LM as read from disk: its Hugging Face config and tensors (Hugging Face names)."""

    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    source: str


def read_hf_lm(folder: str | Path) -> HFLanguageModel:
    """``config.json`` + ``model.safetensors`` (or shards) of a Hugging Face folder."""
    try:
        return HFLanguageModel(read_hf_config(folder), read_hf_weights(folder), str(folder))
    except WeightsError as err:
        raise CheckpointError(str(err)) from err


def load_causal_lm(path: str | Path) -> torch.nn.Module:
    """The LM at ``path`` (``.gguf`` file, dequantised to fp32, or Hugging Face folder) as
    transformers builds it, in eval mode: the reference our decoder is checked against.
    GGUF needs the ``gguf`` and ``accelerate`` packages."""
    from transformers import AutoModelForCausalLM  # heavy: only for this path

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"LM {path} does not exist")
    gguf = {"gguf_file": path.name} if path.suffix == ".gguf" else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path.parent if gguf else path, dtype=torch.float32, local_files_only=True, **gguf
        )
    except (OSError, ValueError, ImportError) as err:
        raise CheckpointError(f"cannot read {'GGUF file' if gguf else 'LM'} {path}: {err}") from err
    return model.eval()


def read_gguf_lm(path: str | Path) -> HFLanguageModel:
    """A GGUF file, dequantised to fp32 by transformers (needs ``gguf`` and ``accelerate``) the
    first time, then read from its fp32 safetensors copy in the cache (``encoders.disk_cache``,
    named by the file's sha256)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"GGUF file {path} does not exist")

    def convert(target: Path) -> None:
        model = load_causal_lm(path)
        write_lm(HFLanguageModel(model.config.to_dict(), model.state_dict(), str(path)), target)

    entry = cached(f"lm-{file_digest(path)}.safetensors", convert)
    return read_converted_lm(entry, str(path))


def write_lm(lm: HFLanguageModel, target: Path) -> None:
    """``lm`` as one safetensors file: each tensor once (tied ones are named as aliases in the
    metadata), the config as JSON in the metadata."""
    tensors, aliases, seen = {}, {}, {}
    for name, tensor in lm.state.items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            tensors[name] = tensor.detach().contiguous()
    metadata = {"config": json.dumps(lm.config, default=str), "aliases": json.dumps(aliases)}
    save_file(tensors, str(target), metadata=metadata)


def read_converted_lm(file: Path, source: str) -> HFLanguageModel:
    """An LM written by :func:`write_lm` (memory-mapped), named after ``source``."""
    with safe_open(str(file), framework="pt") as f:
        metadata = f.metadata() or {}
        state = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
    for name, original in json.loads(metadata.get("aliases", "{}")).items():
        state[name] = state[original]
    return HFLanguageModel(json.loads(metadata["config"]), state, source)


def read_lm(path: str | Path) -> HFLanguageModel:
    """A ``.gguf`` file or a Hugging Face folder."""
    return read_gguf_lm(path) if str(path).endswith(".gguf") else read_hf_lm(path)


def rope_from_hf(hf: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    """``(rope_theta, scaling)`` from transformers 5's ``rope_parameters`` or 4's
    ``rope_theta`` + ``rope_scaling``; unsupported scaling types raise ``ConfigError``."""
    params = {**(hf.get("rope_scaling") or {}), **(hf.get("rope_parameters") or {})}
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    if params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ConfigError("partial rotary embeddings are not supported")
    if kind == "default":
        return theta, None
    if kind == "linear":
        return theta, RopeScaling("linear", float(params["factor"]))
    if kind == "llama3":
        return theta, RopeScaling(
            "llama3",
            factor=float(params["factor"]),
            low_freq_factor=float(params["low_freq_factor"]),
            high_freq_factor=float(params["high_freq_factor"]),
            original_max_seq_len=int(params["original_max_position_embeddings"]),
        )
    raise ConfigError(f"rope scaling {kind!r} is not supported (default, linear, llama3 are)")


def decoder_config_from_hf(
    hf: dict[str, Any], cross_attn_every: int = 1, max_seq_len: int | None = None
) -> DecoderConfig:
    """Our ``DecoderConfig`` for Hugging Face LM config ``hf``; ``max_seq_len`` may cap the
    context (the rotary tables are precomputed for it)."""
    model_type = hf.get("model_type")
    if model_type == "gpt2":
        return gpt2_decoder_config(hf, cross_attn_every, max_seq_len)
    if model_type not in SUPPORTED:
        raise ConfigError(
            f"LM type {model_type!r} is not supported ({', '.join([*SUPPORTED, 'gpt2'])} are)"
        )
    refusals = {
        "hidden_act": (hf.get("hidden_act", "silu") != "silu", "only SwiGLU (silu) MLPs"),
        "mlp_bias": (bool(hf.get("mlp_bias")), "MLP biases"),
        "attention_bias": (
            model_type == "llama" and bool(hf.get("attention_bias")),
            "an o_proj bias (Llama's attention_bias)",
        ),
        "use_sliding_window": (bool(hf.get("use_sliding_window")), "sliding-window attention"),
    }
    for key, (refused, what) in refusals.items():
        if refused:
            raise ConfigError(f"{model_type} config {key}={hf[key]!r}: our decoder lacks {what}")
    theta, scaling = rope_from_hf(hf)
    dim, n_heads = hf["hidden_size"], hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or dim // n_heads
    context = hf.get("max_position_embeddings", 2048)
    return DecoderConfig(
        vocab_size=hf["vocab_size"],
        dim=dim,
        n_layers=hf["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        hidden_dim=hf["intermediate_size"],
        max_seq_len=min(context, max_seq_len) if max_seq_len else context,
        rope_theta=theta,
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        cross_attn_every=cross_attn_every,
        gate_init=0.0,  # closed gates: the decoder is exactly the LM until they train
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        attn_bias=SUPPORTED[model_type] or bool(hf.get("attention_bias")),
        head_dim=None if head_dim * n_heads == dim else head_dim,
        rope_scaling=scaling,
    )


def lm_key_table(config: DecoderConfig) -> dict[str, str]:
    """Hugging Face name -> our ``Decoder`` name, for every tensor the LM must provide."""
    table = {"model.embed_tokens.weight": "embed_tokens.weight", "model.norm.weight": "norm.weight"}
    names = LAYER_PARAMS + (QKV_BIAS if config.attn_bias else ())
    for i in range(config.n_layers):
        table.update({f"model.layers.{i}.{n}": f"layers.{i}.{n}" for n in names})
    if not config.tie_embeddings:
        table["lm_head.weight"] = "lm_head.weight"
    return table


def lm_tensor_names(config: DecoderConfig) -> list[str]:
    """Our names of every ``Decoder`` tensor a pretrained LM provides (GPT-2's family: learned
    positions; else Llama's)."""
    if config.positions == "learned":
        return gpt2_tensor_names(config)
    return list(lm_key_table(config).values())


def map_lm_state_dict(lm: HFLanguageModel, config: DecoderConfig) -> dict[str, torch.Tensor]:
    """``lm``'s tensors under our names; missing or left-over tensors raise ``CheckpointError``."""
    if lm.config.get("model_type") == "gpt2":
        return gpt2_state_dict(dict(lm.state), config, lm.source)
    state = {k: v for k, v in lm.state.items() if not k.endswith(DERIVED_SUFFIXES)}
    if config.tie_embeddings and "lm_head.weight" in state:
        # in-memory state dicts list a tied head too: acceptable only if it is the embedding
        head = state.pop("lm_head.weight")
        if not torch.equal(head, state.get("model.embed_tokens.weight", head)):
            raise CheckpointError(
                f"{lm.source}: the config ties embeddings but lm_head.weight differs from them"
            )
    try:
        return map_keys(state, lm_key_table(config), (), lm.source)
    except WeightsError as err:
        raise CheckpointError(str(err)) from err


def load_lm_weights(decoder: Decoder, lm: HFLanguageModel) -> None:
    """Copy ``lm``'s weights into ``decoder``; its cross-attention layers stay as they are."""
    mapped = map_lm_state_dict(lm, decoder.config)
    state = decoder.state_dict()
    try:
        check_shapes({k: state[k] for k in mapped if k in state}, mapped, lm.source)
    except WeightsError as err:
        raise CheckpointError(str(err)) from err
    state.update(mapped)
    decoder.load_state_dict(state, strict=True)


def load_pretrained_decoder(
    path: str | Path, cross_attn_every: int = 1, max_seq_len: int | None = None
) -> Decoder:
    """A ``Decoder`` holding the LM at ``path`` (Hugging Face folder or ``.gguf`` file)."""
    lm = read_lm(path)
    decoder = Decoder(decoder_config_from_hf(lm.config, cross_attn_every, max_seq_len))
    load_lm_weights(decoder, lm)
    return decoder.eval()
