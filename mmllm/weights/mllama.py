"""Llama 3.2 Vision's language model (``MllamaForCausalLM``, the text half of
``MllamaForConditionalGeneration``) in our decoder: its config and its tensors.

It is a Llama whose layers at ``cross_attention_layers`` are cross-attention layers: no
self-attention, a per-head q/k RMSNorm, and tanh gates on both the attention and the MLP
(``DecoderConfig.cross_attn_only``). Text before the image token does not use those layers' MLP
(``image_token_id``), and the embeddings hold 8 more rows than the head has outputs
(``head_vocab_size``). Its tiled vision model runs as transformers' own
(``encoders.hf_vision``); ``mmllm.weights.hf_import`` puts the whole model together.
"""

from __future__ import annotations

from typing import Any

import torch

from encoders.pretrained import WeightsError, map_keys
from mmllm.config import DecoderConfig
from mmllm.errors import CheckpointError, ConfigError
from mmllm.weights.pretrained_lm import LAYER_PARAMS, rope_from_hf

CROSS_PARAMS = (
    "input_layernorm.weight",
    "cross_attn.q_proj.weight",
    "cross_attn.k_proj.weight",
    "cross_attn.v_proj.weight",
    "cross_attn.o_proj.weight",
    "cross_attn.q_norm.weight",
    "cross_attn.k_norm.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
)
EXTRA_EMBEDDINGS = 8  # rows the embeddings hold past the head's vocabulary


def mllama_text_config(hf: dict[str, Any], image_token_id: int | None = None) -> DecoderConfig:
    """Our ``DecoderConfig`` for Llama 3.2 Vision text config ``hf`` (``MllamaTextConfig``)."""
    if hf.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"mllama text config hidden_act={hf['hidden_act']!r}: only 'silu' is")
    theta, scaling = rope_from_hf(hf)
    dim, heads = hf["hidden_size"], hf["num_attention_heads"]
    vocab = hf["vocab_size"]
    return DecoderConfig(
        vocab_size=vocab + EXTRA_EMBEDDINGS,
        head_vocab_size=vocab,
        dim=dim,
        n_layers=hf["num_hidden_layers"],
        n_heads=heads,
        n_kv_heads=hf.get("num_key_value_heads") or heads,
        hidden_dim=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 2048),
        rope_theta=theta,
        rope_scaling=scaling,
        norm_eps=hf.get("rms_norm_eps", 1e-5),
        cross_attn_layers=tuple(hf.get("cross_attention_layers") or ()),
        cross_attn_only=True,
        cross_attn_qk_norm=True,
        gate_init=0.0,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        image_token_id=image_token_id,
    )


def mllama_text_key_table(config: DecoderConfig) -> dict[str, str]:
    """``MllamaForCausalLM``'s name -> our ``Decoder`` name, for every tensor it must provide."""
    table = {"model.embed_tokens.weight": "embed_tokens.weight", "model.norm.weight": "norm.weight"}
    if not config.tie_embeddings:
        table["lm_head.weight"] = "lm_head.weight"
    for i in range(config.n_layers):
        theirs, ours = f"model.layers.{i}.", f"layers.{i}."
        cross = config.has_cross_attn(i)
        table.update({theirs + n: ours + n for n in (CROSS_PARAMS if cross else LAYER_PARAMS)})
        if cross:
            table[theirs + "cross_attn_attn_gate"] = ours + "cross_attn.gate"
            table[theirs + "cross_attn_mlp_gate"] = ours + "mlp_gate"
    return table


def mllama_text_state_dict(
    state: dict[str, torch.Tensor], config: DecoderConfig, source: str
) -> dict[str, torch.Tensor]:
    """``MllamaForCausalLM``'s tensors (``model.*``, ``lm_head``) under our ``Decoder``'s names;
    missing or left-over tensors raise ``CheckpointError``."""
    try:
        return map_keys(state, mllama_text_key_table(config), (), source)
    except WeightsError as err:
        raise CheckpointError(str(err)) from err
