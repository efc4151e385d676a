"""Whisper tiny.en as transformers runs it, from the same CTranslate2 weights: the reference
that ``encoders.speech`` (CTranslate2) is measured against.

CTranslate2's Whisper spec fuses each self-attention's q/k/v (``linear_0``) and each
cross-attention's k/v (``linear_1``), names LayerNorms ``gamma``/``beta`` and keeps the final
projection tied to the embeddings. The table below maps every tensor onto
``WhisperForConditionalGeneration``, which then loads with no missing or unexpected keys.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

from encoders.ctranslate2 import read_ctranslate2


def _norm(state: dict, src: str) -> dict:
    return {"weight": state[f"{src}/gamma"], "bias": state[f"{src}/beta"]}


def _linear(state: dict, src: str) -> dict:
    return {"weight": state[f"{src}/weight"], "bias": state[f"{src}/bias"]}


def _self_attention(state: dict, src: str, dst: str, dim: int) -> dict:
    weight, bias = state[f"{src}/linear_0/weight"], state[f"{src}/linear_0/bias"]
    out = {
        f"{dst}.q_proj.weight": weight[:dim],
        f"{dst}.q_proj.bias": bias[:dim],
        f"{dst}.k_proj.weight": weight[dim : 2 * dim],  # Whisper's key has no bias
        f"{dst}.v_proj.weight": weight[2 * dim :],
        f"{dst}.v_proj.bias": bias[2 * dim :],
    }
    out |= {f"{dst}.out_proj.{k}": v for k, v in _linear(state, f"{src}/linear_1").items()}
    return out


def _cross_attention(state: dict, src: str, dst: str, dim: int) -> dict:
    kv_weight, kv_bias = state[f"{src}/linear_1/weight"], state[f"{src}/linear_1/bias"]
    out = {f"{dst}.q_proj.{k}": v for k, v in _linear(state, f"{src}/linear_0").items()}
    out |= {
        f"{dst}.k_proj.weight": kv_weight[:dim],
        f"{dst}.v_proj.weight": kv_weight[dim:],
        f"{dst}.v_proj.bias": kv_bias[dim:],
    }
    out |= {f"{dst}.out_proj.{k}": v for k, v in _linear(state, f"{src}/linear_2").items()}
    return out


def _block(state: dict, src: str, dst: str, dim: int, cross: bool) -> dict:
    out = _self_attention(state, f"{src}/self_attention", f"{dst}.self_attn", dim)
    out |= {
        f"{dst}.self_attn_layer_norm.{k}": v
        for k, v in _norm(state, f"{src}/self_attention/layer_norm").items()
    }
    if cross:
        out |= _cross_attention(state, f"{src}/attention", f"{dst}.encoder_attn", dim)
        out |= {
            f"{dst}.encoder_attn_layer_norm.{k}": v
            for k, v in _norm(state, f"{src}/attention/layer_norm").items()
        }
    out |= {f"{dst}.fc1.{k}": v for k, v in _linear(state, f"{src}/ffn/linear_0").items()}
    out |= {f"{dst}.fc2.{k}": v for k, v in _linear(state, f"{src}/ffn/linear_1").items()}
    out |= {
        f"{dst}.final_layer_norm.{k}": v for k, v in _norm(state, f"{src}/ffn/layer_norm").items()
    }
    return out


def hf_whisper(folder: str | Path) -> WhisperForConditionalGeneration:
    """The CTranslate2 Whisper in ``folder`` as a transformers model (fp32, eval mode) with
    tiny.en's generation settings."""
    import json

    folder = Path(folder)
    state = {
        k: v.float() if v.is_floating_point() else v
        for k, v in read_ctranslate2(folder / "model.bin").items()
    }
    dim = state["encoder/conv1/bias"].shape[0]
    n_enc = len({k.split("/")[1] for k in state if re.match(r"encoder/layer_\d", k)})
    n_dec = len({k.split("/")[1] for k in state if re.match(r"decoder/layer_\d", k)})
    vocab = state["decoder/embeddings/weight"].shape[0]
    config = WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=state["encoder/conv1/weight"].shape[1],
        d_model=dim,
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_attention_heads=int(state["encoder/num_heads"]),
        decoder_attention_heads=int(state["decoder/num_heads"]),
        encoder_ffn_dim=state["encoder/layer_0/ffn/linear_0/bias"].shape[0],
        decoder_ffn_dim=state["decoder/layer_0/ffn/linear_0/bias"].shape[0],
        max_source_positions=state["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=state["decoder/position_encodings/encodings"].shape[0],
        bos_token_id=50256,
        eos_token_id=50256,
        pad_token_id=50256,
        decoder_start_token_id=50257,
    )
    hf = {
        "model.encoder.conv1.weight": state["encoder/conv1/weight"],
        "model.encoder.conv1.bias": state["encoder/conv1/bias"],
        "model.encoder.conv2.weight": state["encoder/conv2/weight"],
        "model.encoder.conv2.bias": state["encoder/conv2/bias"],
        "model.encoder.embed_positions.weight": state["encoder/position_encodings/encodings"],
        "model.decoder.embed_tokens.weight": state["decoder/embeddings/weight"],
        "model.decoder.embed_positions.weight": state["decoder/position_encodings/encodings"],
        "proj_out.weight": state["decoder/projection/weight"],
    }
    hf |= {
        f"model.encoder.layer_norm.{k}": v for k, v in _norm(state, "encoder/layer_norm").items()
    }
    hf |= {
        f"model.decoder.layer_norm.{k}": v for k, v in _norm(state, "decoder/layer_norm").items()
    }
    for i in range(n_enc):
        hf |= _block(state, f"encoder/layer_{i}", f"model.encoder.layers.{i}", dim, cross=False)
    for i in range(n_dec):
        hf |= _block(state, f"decoder/layer_{i}", f"model.decoder.layers.{i}", dim, cross=True)
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(hf, strict=False)
    missing = [k for k in missing if not k.endswith("k_proj.bias")]  # no key bias in Whisper
    if missing or unexpected:
        raise ValueError(f"Whisper mapping: missing {missing}, unexpected {unexpected}")
    settings = json.loads((folder / "config.json").read_text())
    model.generation_config = GenerationConfig(
        decoder_start_token_id=50257,
        eos_token_id=50256,
        pad_token_id=50256,
        no_timestamps_token_id=50362,
        suppress_tokens=settings["suppress_ids"],
        begin_suppress_tokens=settings["suppress_ids_begin"],
        is_multilingual=False,
        max_length=448,
    )
    return model.eval()


def hf_transcribe(
    model: WhisperForConditionalGeneration, features: torch.Tensor, beams: int
) -> list[list[int]]:
    """Log-mel windows ``(B, 80, 3000)`` -> each one's token ids, without timestamps."""
    with torch.inference_mode():
        out = model.generate(input_features=features, num_beams=beams, return_timestamps=False)
    return out.tolist()
