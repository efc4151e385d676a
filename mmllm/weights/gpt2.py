"""GPT-2 in our decoder: its config and its tensors under our names.

GPT-2's block is ours with LayerNorm, learned absolute positions, a GELU (tanh) MLP and biases
everywhere (``DecoderConfig``). Its products are ``Conv1D``s, whose weights are stored
``(in, out)``: each is transposed to a ``Linear``'s ``(out, in)``, and the fused ``c_attn``
(q, k and v in one product) is split in three. A ``VisionEncoderDecoderModel``'s GPT-2 also
has a cross-attention in every block (``crossattention``: ``q_attn`` for the queries,
``c_attn`` for the media's keys and values), added without a gate.
"""

from __future__ import annotations

from typing import Any

import torch

from mmllm.config import DecoderConfig
from mmllm.errors import CheckpointError, ConfigError

# recomputed or not needed: older checkpoints store the causal-mask buffers
DERIVED = (".attn.bias", ".attn.masked_bias", ".crossattention.bias", ".crossattention.masked_bias")
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


def gpt2_decoder_config(
    hf: dict[str, Any],
    cross_attn_every: int = 1,
    max_seq_len: int | None = None,
    gated: bool = True,
) -> DecoderConfig:
    """Our ``DecoderConfig`` for GPT-2 config ``hf``. ``gated``: new cross-attention layers
    behind gates at 0 (``mmllm build``: the LM stays exactly itself); False for a model whose
    cross-attention is trained already (a ``VisionEncoderDecoderModel``'s)."""
    activation = hf.get("activation_function", "gelu_new")
    refusals = {
        "activation_function": (activation not in ACTIVATIONS, "that activation"),
        "scale_attn_weights": (not hf.get("scale_attn_weights", True), "unscaled attention"),
        "scale_attn_by_inverse_layer_idx": (
            bool(hf.get("scale_attn_by_inverse_layer_idx")),
            "attention scaled by the layer's index",
        ),
    }
    for key, (refused, what) in refusals.items():
        if refused:
            raise ConfigError(f"gpt2 config {key}={hf.get(key)!r}: our decoder lacks {what}")
    dim, context = hf["n_embd"], hf["n_positions"]
    return DecoderConfig(
        vocab_size=hf["vocab_size"],
        dim=dim,
        n_layers=hf["n_layer"],
        n_heads=hf["n_head"],
        n_kv_heads=hf["n_head"],
        hidden_dim=hf.get("n_inner") or 4 * dim,
        max_seq_len=min(context, max_seq_len) if max_seq_len else context,
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        cross_attn_every=cross_attn_every,
        gate_init=0.0,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        norm="layer",
        positions="learned",
        mlp=ACTIVATIONS[activation],
        linear_bias=True,
        cross_attn_gated=gated,
    )


def gpt2_tensor_names(config: DecoderConfig) -> list[str]:
    """Our names of the tensors a GPT-2 LM provides (its cross-attention layers not included)."""
    layer = (
        "input_layernorm",
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "post_attention_layernorm",
        "mlp.up_proj",
        "mlp.down_proj",
    )
    names = ["embed_tokens.weight", "embed_positions.weight", "norm.weight", "norm.bias"]
    for i in range(config.n_layers):
        names += [f"layers.{i}.{n}.{p}" for n in layer for p in ("weight", "bias")]
    return names + ([] if config.tie_embeddings else ["lm_head.weight"])


def gpt2_state_dict(
    state: dict[str, torch.Tensor], config: DecoderConfig, source: str, cross_attn: bool = False
) -> dict[str, torch.Tensor]:
    """GPT-2's tensors (names with or without ``transformer.``) under our ``Decoder``'s names.
    ``cross_attn``: also its cross-attention layers (else ours stay as they are). Missing or
    left-over tensors raise ``CheckpointError``."""
    prefix = "transformer." if any(k.startswith("transformer.") for k in state) else ""
    left = {k: v for k, v in state.items() if not k.endswith(DERIVED)}

    def take(name: str) -> torch.Tensor:
        try:
            return left.pop(prefix + name)
        except KeyError:
            raise CheckpointError(f"{source}: GPT-2 tensor {prefix + name} is missing") from None

    def linear(ours: str, theirs: str) -> dict[str, torch.Tensor]:  # a Conv1D, (in, out)
        return {
            f"{ours}.weight": take(f"{theirs}.weight").t(),
            f"{ours}.bias": take(f"{theirs}.bias"),
        }

    def norm(ours: str, theirs: str) -> dict[str, torch.Tensor]:
        return {f"{ours}.weight": take(f"{theirs}.weight"), f"{ours}.bias": take(f"{theirs}.bias")}

    def split(names: tuple[str, ...], theirs: str) -> dict[str, torch.Tensor]:
        weights = take(f"{theirs}.weight").t().chunk(len(names), 0)
        biases = take(f"{theirs}.bias").chunk(len(names), 0)
        out = {}
        for name, weight, bias in zip(names, weights, biases, strict=True):
            out.update({f"{name}.weight": weight, f"{name}.bias": bias})
        return out

    positions = take("wpe.weight")
    out = {
        "embed_tokens.weight": take("wte.weight"),
        "embed_positions.weight": positions[: config.max_seq_len],
        **norm("norm", "ln_f"),
    }
    for i in range(config.n_layers):
        h, ours = f"h.{i}.", f"layers.{i}."
        attn = ("q_proj", "k_proj", "v_proj")
        out.update(norm(ours + "input_layernorm", h + "ln_1"))
        out.update(split(tuple(ours + "self_attn." + n for n in attn), h + "attn.c_attn"))
        out.update(linear(ours + "self_attn.o_proj", h + "attn.c_proj"))
        out.update(norm(ours + "post_attention_layernorm", h + "ln_2"))
        out.update(linear(ours + "mlp.up_proj", h + "mlp.c_fc"))
        out.update(linear(ours + "mlp.down_proj", h + "mlp.c_proj"))
        if cross_attn and config.has_cross_attn(i):
            cross = ours + "cross_attn."
            out.update(norm(ours + "cross_attn_layernorm", h + "ln_cross_attn"))
            out.update(linear(cross + "q_proj", h + "crossattention.q_attn"))
            out.update(split((cross + "k_proj", cross + "v_proj"), h + "crossattention.c_attn"))
            out.update(linear(cross + "o_proj", h + "crossattention.c_proj"))
    head = left.pop("lm_head.weight", None)
    if (
        head is not None
        and config.tie_embeddings
        and not torch.equal(head, out["embed_tokens.weight"])
    ):
        raise CheckpointError(f"{source}: the config ties embeddings but lm_head.weight differs")
    if head is not None and not config.tie_embeddings:
        out["lm_head.weight"] = head
    if left:
        raise CheckpointError(f"{source}: {len(left)} unexpected GPT-2 tensors: {sorted(left)[:8]}")
    return out  # Conv1D weights as transposed views: the column-major layout our products want
