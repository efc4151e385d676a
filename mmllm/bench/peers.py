"""Benchmark workloads: our model and Hugging Face peers of matched size, random weights.

- ``ours``: ``MultimodalLM`` (ViT encoder, decoder with gated cross-attention, image-only).
- ``ved``: transformers' ``VisionEncoderDecoderModel`` (ViT + GPT-2 with cross-attention in
  every layer): the same family as ours.
- ``llava``: transformers' ``LlavaForConditionalGeneration`` (CLIP ViT + Llama, image tokens
  placed in the text sequence).

Each peer copies our encoder/decoder widths and depths; one free size (the peer decoder's MLP
width) is solved so total parameter counts match within a few percent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from encoders import ImageEncoderConfig
from mmllm.compiled import CompiledModel
from mmllm.config import DecoderConfig, MMConfig
from mmllm.generate import SamplingConfig, generate_ids
from mmllm.model.media import MediaBatch
from mmllm.model.multimodal import MultimodalLM
from mmllm.packed import pack_linears
from mmllm.presets import PRESETS
from mmllm.quantize import quantize as quantize_model
from mmllm.tokenizer import StopTokens
from mmllm.weights.hf_import import blip_model, vision_encoder_decoder_model

SIZES: dict[str, MMConfig] = {
    "small": replace(PRESETS["tiny"], audio=None),  # the shipped model's size, image only
    "base": MMConfig(
        image=ImageEncoderConfig(image_size=64, patch_size=8, dim=256, n_layers=4, n_heads=4),
        audio=None,
        decoder=DecoderConfig(
            vocab_size=8192,
            dim=768,
            n_layers=12,
            n_heads=12,
            n_kv_heads=4,
            hidden_dim=2048,
            max_seq_len=256,
            cross_attn_every=2,
        ),
    ),
}
PROMPT_TOKENS = 8


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weights_read_per_token(decoder: torch.nn.Module) -> int:
    """Bytes of weights a batch-1 decode step must read: every decoder tensor but the
    cross-attention's key and value products (run once per request, on the media) and the
    position table (one row)."""
    skipped = ("cross_attn.k_proj", "cross_attn.v_proj", "embed_positions", "rotary.")
    tensors = {**dict(decoder.named_parameters()), **dict(decoder.named_buffers())}
    return sum(
        t.numel() * t.element_size()
        for name, t in tensors.items()
        if not any(s in name for s in skipped) and (t.is_floating_point() or t.dtype == torch.int8)
    )


@dataclass
class Workload:
    """A model and how to caption ``batch`` images with exactly ``new_tokens`` greedy tokens."""

    name: str
    model: torch.nn.Module
    run: Any  # (pixels (B,3,H,W), new_tokens) -> generated ids (B, new_tokens)
    prefill: Any  # (pixels) -> first-token logits, for time to first token
    image_size: int

    @property
    def parameters(self) -> int:
        return count(self.model)


def build_ours(config: MMConfig, quantize: str | None = None, compile: bool = False) -> Workload:
    """Our model as ``mmllm.load`` prepares it (packed weights, or int8); ``compile``: through
    compiled decoding, which compiles in the first (warm-up) calls."""
    torch.manual_seed(0)
    model = _as_loaded(MultimodalLM(config).eval(), quantize)
    compiled = CompiledModel(model) if compile else None
    stops = StopTokens(eos=-1, pad=0)  # never stops early: a fixed length for timing
    prompt = [5] * PROMPT_TOKENS
    return _mmllm_workload(model, prompt, stops, config.image.image_size, compiled=compiled)


def _as_loaded(model: MultimodalLM, quantize: str | None) -> MultimodalLM:
    """``model`` as ``mmllm.load`` prepares it: int8 products, or packed fp32 ones."""
    if quantize:
        return quantize_model(model, quantize)
    return pack_linears(model)


def _mmllm_workload(
    model: MultimodalLM,
    prompt: list[int],
    stops: StopTokens,
    image_size: int,
    compiled: CompiledModel | None = None,
    repetition_guard: bool = True,
) -> Workload:
    """Our ``model`` captioning each picture after the prompt ids ``prompt``, exactly
    ``new_tokens`` greedy steps (``stops`` must not end a row early)."""

    def inputs(pixels: torch.Tensor):
        B, device = pixels.shape[0], pixels.device
        token_ids = torch.tensor([prompt] * B, dtype=torch.long, device=device)
        mask = torch.ones_like(token_ids, dtype=torch.bool)
        media = MediaBatch(B, pixels=pixels, image_index=torch.arange(B, device=device))
        return token_ids, mask, model.prepare_media(media, compiled)

    @torch.inference_mode()
    def run(pixels: torch.Tensor, new_tokens: int) -> torch.Tensor:
        token_ids, mask, context = inputs(pixels)
        sampling = SamplingConfig(max_new_tokens=new_tokens, repetition_guard=repetition_guard)
        return generate_ids(model, token_ids, mask, context, sampling, stops, compiled=compiled)

    @torch.inference_mode()
    def prefill(pixels: torch.Tensor) -> torch.Tensor:
        token_ids, _mask, context = inputs(pixels)
        return model.decoder(token_ids, context)[:, -1]

    return Workload("mmllm", model, run, prefill, image_size)


def vision_sizes(img: ImageEncoderConfig) -> dict[str, int]:
    """Our image ViT's sizes in the keywords of transformers' ViT and CLIP vision configs."""
    return {
        "image_size": img.image_size,
        "patch_size": img.patch_size,
        "hidden_size": img.dim,
        "num_hidden_layers": img.n_layers,
        "num_attention_heads": img.n_heads,
        "intermediate_size": int(img.dim * img.mlp_ratio),
    }


def _solve(build, target: int, low: int, high: int) -> Any:
    """The model ``build(width)`` whose parameter count is nearest ``target`` (count grows with
    width), by bisection over integer widths that are multiples of 8."""
    while high - low > 8:
        mid = (low + high) // 16 * 8
        if count(build(mid)) < target:
            low = mid
        else:
            high = mid
    return min((build(low), build(high)), key=lambda m: abs(count(m) - target))


def build_ved(config: MMConfig, target: int) -> Workload:
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
    )

    img, dec = config.image, config.decoder

    def build(inner: int):
        torch.manual_seed(0)
        enc = ViTConfig(**vision_sizes(img))
        gpt = GPT2Config(
            vocab_size=dec.vocab_size,
            n_embd=dec.dim,
            n_layer=dec.n_layers,
            n_head=dec.n_heads,
            n_inner=inner,
            n_positions=dec.max_seq_len,
            add_cross_attention=True,
            is_decoder=True,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
        cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, gpt)
        cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = 1, 0, 2
        return VisionEncoderDecoderModel(cfg).eval()

    model = _solve(build, target, 8, 8 * dec.hidden_dim)
    return _transformers_workload(model, 1, img.image_size)  # decoding starts from token 1


def build_llava(config: MMConfig, target: int) -> Workload:
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    img, dec = config.image, config.decoder
    n_image_tokens = (img.image_size // img.patch_size) ** 2
    image_token = dec.vocab_size - 1

    def build(inner: int):
        torch.manual_seed(0)
        vision = CLIPVisionConfig(**vision_sizes(img))
        text = LlamaConfig(
            vocab_size=dec.vocab_size,
            hidden_size=dec.dim,
            num_hidden_layers=dec.n_layers,
            num_attention_heads=dec.n_heads,
            num_key_value_heads=dec.n_kv_heads,
            intermediate_size=inner,
            max_position_embeddings=dec.max_seq_len + n_image_tokens,
            tie_word_embeddings=True,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
        cfg = LlavaConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=image_token,
            image_seq_length=n_image_tokens,
            tie_word_embeddings=True,
            vision_feature_select_strategy="default",
        )
        return LlavaForConditionalGeneration(cfg).eval()

    model = _solve(build, target, 8, 8 * dec.hidden_dim)

    def inputs(pixels: torch.Tensor) -> torch.Tensor:
        B = pixels.shape[0]
        ids = torch.full((B, n_image_tokens + PROMPT_TOKENS), 5, device=pixels.device)
        ids[:, :n_image_tokens] = image_token
        return ids

    @torch.inference_mode()
    def run(pixels: torch.Tensor, new_tokens: int) -> torch.Tensor:
        ids = inputs(pixels)
        out = model.generate(
            input_ids=ids,
            pixel_values=pixels,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            num_beams=1,
        )
        return out[:, ids.shape[1] :]

    @torch.inference_mode()
    def prefill(pixels: torch.Tensor) -> torch.Tensor:
        return model(input_ids=inputs(pixels), pixel_values=pixels).logits[:, -1]

    return Workload("LlavaForConditionalGeneration", model, run, prefill, img.image_size)


# published models rebuilt with random weights, for same-weights runs (``mmllm bench
# --same-weights``): vit-gpt2-image-captioning (ViT-base/16 at 224 px, GPT-2 small) and
# blip-image-captioning-base (BLIP's ViT-base/16 at 384 px, its BERT-base text decoder)
VIT_BASE_16 = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    patch_size=16,
)
SAME_WEIGHTS = {
    "vit-gpt2": dict(
        encoder={**VIT_BASE_16, "image_size": 224},
        decoder=dict(vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024),
        start=50256,  # <|endoftext|>: begins, ends and pads
        end=50256,
        pad=50256,
    ),
    "blip-base": dict(
        encoder={**VIT_BASE_16, "image_size": 384},
        decoder=dict(
            vocab_size=30524,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            encoder_hidden_size=768,
            max_position_embeddings=512,
        ),
        start=30522,  # [DEC]
        end=102,  # [SEP]
        pad=0,
    ),
}


def published_model(family: str) -> torch.nn.Module:
    """transformers' model of ``family`` at its published size, random weights (seed 0)."""
    import transformers

    sizes = SAME_WEIGHTS[family]
    start, end, pad = sizes["start"], sizes["end"], sizes["pad"]
    torch.manual_seed(0)
    if family == "blip-base":
        text = transformers.BlipTextConfig(
            **sizes["decoder"], bos_token_id=start, sep_token_id=end, pad_token_id=pad
        )
        text.eos_token_id = end
        vision = transformers.BlipVisionConfig(**sizes["encoder"])
        config = transformers.BlipConfig(vision_config=vision.to_dict(), text_config=text.to_dict())
        return transformers.BlipForConditionalGeneration(config).eval()
    decoder = transformers.GPT2Config(
        **sizes["decoder"], add_cross_attention=True, is_decoder=True, bos_token_id=start
    )
    decoder.eos_token_id = end
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(
        transformers.ViTConfig(**sizes["encoder"]), decoder
    )
    config.decoder_start_token_id, config.eos_token_id, config.pad_token_id = start, end, pad
    return transformers.VisionEncoderDecoderModel(config).eval()


def build_same_weights(family: str, side: str, quantize: str | None = None) -> Workload:
    """``family``'s published model with random weights, as transformers runs it
    (``side="transformers"``) or converted into our runtime (``"mmllm"``, as ``mmllm.load``
    prepares it: packed weights, or int8); both build the same weights from one seed. Captions
    start from the decoder's start token and run exactly ``new_tokens`` greedy steps."""
    hf = published_model(family)
    sizes = SAME_WEIGHTS[family]
    start, end, pad = sizes["start"], sizes["end"], sizes["pad"]
    size = sizes["encoder"]["image_size"]
    if side == "transformers":
        return _transformers_workload(hf, start, size)
    if side != "mmllm":
        raise ValueError(f"unknown side {side!r} (transformers or mmllm)")
    convert = blip_model if family == "blip-base" else vision_encoder_decoder_model
    model = convert(hf.config.to_dict(), hf.state_dict(), family)
    hf = None  # its tensors are ours now: nothing was copied
    stops = StopTokens(eos=-1, pad=pad, never=(end,))  # as min_new_tokens: no early end
    return _mmllm_workload(
        _as_loaded(model, quantize), [start], stops, size, repetition_guard=False
    )


def _transformers_workload(hf: torch.nn.Module, start_id: int, size: int) -> Workload:
    """A captioner (``VisionEncoderDecoderModel``, ``BlipForConditionalGeneration``) generating
    as transformers ships it, from its decoder's start token ``start_id``."""
    blip = type(hf).__name__ == "BlipForConditionalGeneration"

    def start(pixels: torch.Tensor, extra: int = 0) -> torch.Tensor:
        ids = torch.full((pixels.shape[0], 1 + extra), start_id, dtype=torch.long)
        return ids.to(pixels.device)

    @torch.inference_mode()
    def run(pixels: torch.Tensor, new_tokens: int) -> torch.Tensor:
        lengths = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens}
        if blip:  # BLIP's generate drops the prompt's last token (its [SEP])
            out = hf.generate(pixel_values=pixels, input_ids=start(pixels, 1), **lengths)
        else:
            out = hf.generate(
                pixel_values=pixels, decoder_input_ids=start(pixels), do_sample=False, **lengths
            )
        return out[:, 1:]

    @torch.inference_mode()
    def prefill(pixels: torch.Tensor) -> torch.Tensor:
        if blip:
            return hf(pixel_values=pixels, input_ids=start(pixels)).logits[:, -1]
        return hf(pixel_values=pixels, decoder_input_ids=start(pixels)).logits[:, -1]

    return Workload(type(hf).__name__, hf, run, prefill, size)


def build(side: str, size: str, quantize: str | None = None, compile: bool = False) -> Workload:
    """The workload of ``side`` (ours, ved, llava) at ``size``; peers match our parameters.
    ``compile``: ours through compiled decoding. Size ``same:FAMILY``: ``build_same_weights``
    (side ``transformers`` or ``mmllm``)."""
    if size.startswith("same:"):
        return build_same_weights(size.removeprefix("same:"), side, quantize)
    config = SIZES[size]
    if side == "ours":
        return build_ours(config, quantize, compile)
    ours = build_ours(config)
    if side == "ved":
        return build_ved(config, ours.parameters)
    if side == "llava":
        return build_llava(config, ours.parameters)
    raise ValueError(f"unknown side {side!r}")
