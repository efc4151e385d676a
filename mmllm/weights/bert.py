"""BERT-style decoders in our decoder: their config and their tensors under our names.

BLIP's captioning decoder, and a ``BertLMHeadModel`` decoding for a ``VisionEncoderDecoderModel``,
are a BERT with a cross-attention in every layer: our block with
LayerNorm in BERT's order (``post_norm``: each sub-layer's residual sum is normed, and so are
the embeddings), learned absolute positions, an exact-GELU MLP, biases everywhere, an ungated
cross-attention reading the vision model's width (``media_dim``), and BERT's head (a dense +
GELU + LayerNorm transform before the tied product, which has a bias). BERT's token types are
all type 0 when decoding, so their first row is folded into the position table.
"""

from __future__ import annotations

from typing import Any

import torch

from encoders.pretrained import WeightsError, map_keys
from mmllm.config import DecoderConfig
from mmllm.errors import CheckpointError, ConfigError

DERIVED = ("position_ids",)
TOKEN_TYPES = "bert.embeddings.token_type_embeddings.weight"
POSITIONS = "bert.embeddings.position_embeddings.weight"


def bert_decoder_config(
    hf: dict[str, Any], media_dim: int | None = None, encoder: bool = False
) -> DecoderConfig:
    """Our ``DecoderConfig`` for a BERT-style decoder config ``hf`` (``BlipTextConfig``, or a
    ``BertConfig`` with cross-attention); ``media_dim``: the width its cross-attention reads.
    ``encoder``: the same layers as a text encoder (attention in both directions, no head),
    as BLIP's question encoder."""
    if hf.get("hidden_act", "gelu") != "gelu":
        raise ConfigError(f"BERT-style decoder hidden_act={hf['hidden_act']!r}: only 'gelu' is")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError(
            f"BERT-style decoder position_embedding_type={hf['position_embedding_type']!r}: "
            "only 'absolute' is"
        )
    dim, heads = hf["hidden_size"], hf["num_attention_heads"]
    media = media_dim if media_dim is not None else hf.get("encoder_hidden_size", dim)
    return DecoderConfig(
        vocab_size=hf["vocab_size"],
        dim=dim,
        n_layers=hf["num_hidden_layers"],
        n_heads=heads,
        n_kv_heads=heads,
        hidden_dim=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 512),
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        cross_attn_every=1,
        tie_embeddings=encoder or bool(hf.get("tie_word_embeddings", True)),
        norm="layer",
        positions="learned",
        mlp="gelu",
        linear_bias=True,
        cross_attn_gated=False,
        post_norm=True,
        head_transform=not encoder,
        media_dim=None if media == dim else media,
        causal=not encoder,
    )


def bert_decoder_key_table(config: DecoderConfig) -> dict[str, str]:
    """A BERT-style decoder's tensor name -> our ``Decoder`` name, for every tensor it must
    provide."""
    table: dict[str, str] = {}

    def both(theirs: str, ours: str) -> None:
        table.update({f"{theirs}.{p}": f"{ours}.{p}" for p in ("weight", "bias")})

    emb = "bert.embeddings."
    table[emb + "word_embeddings.weight"] = "embed_tokens.weight"
    table[emb + "position_embeddings.weight"] = "embed_positions.weight"
    both(emb + "LayerNorm", "embed_norm")
    if config.head_transform:  # a decoder's head (an encoder has none)
        both("cls.predictions.transform.dense", "head_transform.dense")
        both("cls.predictions.transform.LayerNorm", "head_transform.norm")
        table["cls.predictions.bias"] = "head_bias"
    for i in range(config.n_layers):
        h, ours = f"bert.encoder.layer.{i}.", f"layers.{i}."
        for part, mine in (("attention", "self_attn"), ("crossattention", "cross_attn")):
            for theirs, proj in (
                ("self.query", "q_proj"),
                ("self.key", "k_proj"),
                ("self.value", "v_proj"),
                ("output.dense", "o_proj"),
            ):
                both(f"{h}{part}.{theirs}", f"{ours}{mine}.{proj}")
        both(h + "attention.output.LayerNorm", ours + "input_layernorm")
        both(h + "crossattention.output.LayerNorm", ours + "cross_attn_layernorm")
        both(h + "intermediate.dense", ours + "mlp.up_proj")
        both(h + "output.dense", ours + "mlp.down_proj")
        both(h + "output.LayerNorm", ours + "post_attention_layernorm")
    return table


def bert_decoder_state_dict(
    state: dict[str, torch.Tensor], config: DecoderConfig, source: str
) -> dict[str, torch.Tensor]:
    """A BERT-style decoder's tensors (``bert.*`` and ``cls.*``) under our ``Decoder``'s names;
    missing or left-over tensors raise ``CheckpointError``."""
    state = {k: v for k, v in state.items() if not k.endswith(DERIVED)}
    if TOKEN_TYPES in state and POSITIONS in state:  # every token is of type 0
        state[POSITIONS] = state[POSITIONS] + state.pop(TOKEN_TYPES)[0]
    head = state.get("cls.predictions.decoder.weight")  # tied to the word embeddings
    words = state.get("bert.embeddings.word_embeddings.weight")
    if head is not None and words is not None and not torch.equal(head, words):
        raise CheckpointError(f"{source}: the decoder's head is not tied to its embeddings")
    table = bert_decoder_key_table(config)
    try:  # the head's decoder.bias is cls.predictions.bias itself
        return map_keys(state, table, ("cls.predictions.decoder.",), source)
    except WeightsError as err:
        raise CheckpointError(str(err)) from err
