"""BLIP's text decoder in our decoder: its config and its tensors under our names.

BLIP's captioning decoder is a BERT with a cross-attention in every layer: our block with
LayerNorm in BERT's order (``post_norm``: each sub-layer's residual sum is normed, and so are
the embeddings), learned absolute positions, an exact-GELU MLP, biases everywhere, an ungated
cross-attention reading the vision model's width (``media_dim``), and BERT's head (a dense +
GELU + LayerNorm transform before the tied product, which has a bias).
"""

from __future__ import annotations

from typing import Any

import torch

from mmllm.config import DecoderConfig
from mmllm.errors import CheckpointError, ConfigError

DERIVED = ("position_ids",)


def blip_text_config(hf: dict[str, Any], media_dim: int | None = None) -> DecoderConfig:
    """Our ``DecoderConfig`` for BLIP text-decoder config ``hf`` (``BlipTextConfig``)."""
    if hf.get("hidden_act", "gelu") != "gelu":
        raise ConfigError(f"blip text config hidden_act={hf['hidden_act']!r}: only 'gelu' is")
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
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        norm="layer",
        positions="learned",
        mlp="gelu",
        linear_bias=True,
        cross_attn_gated=False,
        post_norm=True,
        head_transform=True,
        media_dim=None if media == dim else media,
    )


def blip_text_state_dict(
    state: dict[str, torch.Tensor], config: DecoderConfig, source: str
) -> dict[str, torch.Tensor]:
    """A BLIP text decoder's tensors (``bert.*`` and ``cls.*``) under our ``Decoder``'s names;
    missing or left-over tensors raise ``CheckpointError``."""
    left = {k: v for k, v in state.items() if not k.endswith(DERIVED)}

    def take(name: str) -> torch.Tensor:
        try:
            return left.pop(name)
        except KeyError:
            raise CheckpointError(f"{source}: BLIP text tensor {name} is missing") from None

    def both(ours: str, theirs: str) -> dict[str, torch.Tensor]:
        return {f"{ours}.weight": take(f"{theirs}.weight"), f"{ours}.bias": take(f"{theirs}.bias")}

    emb = "bert.embeddings."
    out = {
        "embed_tokens.weight": take(emb + "word_embeddings.weight"),
        "embed_positions.weight": take(emb + "position_embeddings.weight"),
        **both("embed_norm", emb + "LayerNorm"),
        **both("head_transform.dense", "cls.predictions.transform.dense"),
        **both("head_transform.norm", "cls.predictions.transform.LayerNorm"),
        "head_bias": take("cls.predictions.bias"),
    }
    head = left.pop("cls.predictions.decoder.weight", None)
    left.pop("cls.predictions.decoder.bias", None)  # the same tensor as cls.predictions.bias
    if head is not None and not torch.equal(head, out["embed_tokens.weight"]):
        raise CheckpointError(f"{source}: the decoder's head is not tied to its embeddings")
    for i in range(config.n_layers):
        h, ours = f"bert.encoder.layer.{i}.", f"layers.{i}."
        for part, mine in (("attention", "self_attn"), ("crossattention", "cross_attn")):
            attn = h + part + "."
            out.update(both(f"{ours}{mine}.q_proj", attn + "self.query"))
            out.update(both(f"{ours}{mine}.k_proj", attn + "self.key"))
            out.update(both(f"{ours}{mine}.v_proj", attn + "self.value"))
            out.update(both(f"{ours}{mine}.o_proj", attn + "output.dense"))
        out.update(both(ours + "input_layernorm", h + "attention.output.LayerNorm"))
        out.update(both(ours + "cross_attn_layernorm", h + "crossattention.output.LayerNorm"))
        out.update(both(ours + "mlp.up_proj", h + "intermediate.dense"))
        out.update(both(ours + "mlp.down_proj", h + "output.dense"))
        out.update(both(ours + "post_attention_layernorm", h + "output.LayerNorm"))
    if left:
        raise CheckpointError(f"{source}: {len(left)} unexpected BLIP tensors: {sorted(left)[:8]}")
    return out
