"""Hugging Face vision towers (CLIP, SigLIP, ViT) from a local folder, as image encoders.

The tower is transformers' own ``CLIPVisionModel`` / ``SiglipVisionModel``, built from the
folder's config (never downloaded); that config is kept verbatim in
``ImageEncoderConfig.hf_config`` so a checkpoint rebuilds the same tower. A folder may hold the
vision model alone or a whole CLIP/SigLIP model (its ``vision_config``; the text tower and the
projections are dropped by an explicit rule).

Tokens: the last layer's patch tokens, ``last_hidden_state`` without CLIP's class token (as
LLaVA reads CLIP; SigLIP's are already normalised by its ``post_layernorm``). The pooled
outputs are not used: SigLIP's attention-pooling head is not built, CLIP's ``post_layernorm``
is loaded with the weights but feeds only the pooled output we do not read. A ViT (the
encoder of a ``VisionEncoderDecoderModel``) and BLIP's vision model give all their tokens,
class token first, as those models' decoders read them; a ViT's pooler is not built.

Llama 3.2 Vision's vision model is *tiled*: a picture is resized onto a canvas of up to
``max_num_tiles`` square tiles (one of its supported aspect ratios) and each tile is read, then
all of them together. Its input is the tiles ``(B, T, 3, S, S)`` (padded with empty tiles) and
the aspect-ratio id of each picture; its tokens are every tile's patch tokens (class token
first), each the last layer's state joined with chosen earlier layers' (``vision_output_dim``
wide), and the empty tiles' tokens are masked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from encoders.image import ImageEncoderConfig
from encoders.pretrained import WeightsError, check_shapes, read_hf_config, read_hf_weights

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# vision model_type -> (whole-model model_type, drop the class token?, default mean, std)
TOWERS = {
    "clip_vision_model": ("clip", True, CLIP_MEAN, CLIP_STD),
    "siglip_vision_model": ("siglip", False, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "vit": (None, False, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "blip_vision_model": (None, False, CLIP_MEAN, CLIP_STD),
    "mllama_vision_model": ("mllama", False, CLIP_MEAN, CLIP_STD),
}
TILED = ("mllama_vision_model",)  # towers that read a picture as tiles
# PIL's resample codes in a preprocessor_config.json -> ours
RESAMPLE = {2: "bilinear", 3: "bicubic"}
# parts of a whole CLIP/SigLIP checkpoint that are not the vision tower
DROPPED = ("text_model.", "visual_projection.", "text_projection.", "logit_scale", "logit_bias")


def _tower(model_type: str, hf_config: dict[str, Any]) -> nn.Module:
    """transformers' own vision model for ``hf_config`` (random weights)."""
    import transformers  # heavy: only for these towers

    if model_type == "vit":
        config = transformers.ViTConfig.from_dict(hf_config)
        return transformers.ViTModel(config, add_pooling_layer=False)
    if model_type == "blip_vision_model":
        return transformers.BlipVisionModel(transformers.BlipVisionConfig.from_dict(hf_config))
    if model_type == "mllama_vision_model":
        config = transformers.MllamaVisionConfig.from_dict(hf_config)
        return transformers.MllamaVisionModel(config)
    cls = {
        "clip_vision_model": transformers.CLIPVisionModel,
        "siglip_vision_model": transformers.SiglipVisionModel,
    }[model_type]
    return cls(cls.config_class.from_dict(hf_config))


def _vision_config(folder: str | Path) -> dict[str, Any]:
    """The vision tower's config dict in ``folder`` (a vision model's, or a whole model's
    ``vision_config``)."""
    config = read_hf_config(folder)
    whole = {whole: vision for vision, (whole, *_) in TOWERS.items() if whole}
    if config.get("model_type") in whole:
        config = {**config["vision_config"], "model_type": whole[config["model_type"]]}
    if config.get("model_type") not in TOWERS:
        raise WeightsError(
            f"{folder} holds a {config.get('model_type')!r} model, not a vision tower of "
            f"{sorted(TOWERS)} (or a whole {sorted(w for w, *_ in TOWERS.values() if w)} model)"
        )
    if config["model_type"] == "siglip_vision_model":
        config["vision_use_head"] = False  # its pooling head: not ours
    return config


def hf_vision_config(folder: str | Path) -> ImageEncoderConfig:
    """The ``ImageEncoderConfig`` of the CLIP/SigLIP vision tower in ``folder`` (pixel
    normalisation from its ``preprocessor_config.json`` when present)."""
    return tower_config(_vision_config(folder), Path(folder) / "preprocessor_config.json")


def tower_config(hf: dict[str, Any], processor: Path | None = None) -> ImageEncoderConfig:
    """The ``ImageEncoderConfig`` of vision tower config ``hf`` (a ``TOWERS`` model type),
    with the pixel normalisation and resampling of ``processor`` (a
    ``preprocessor_config.json``) when it exists."""
    if hf.get("model_type") not in TOWERS:
        kind = hf.get("model_type")
        raise WeightsError(f"a {kind!r} vision model is not one of {sorted(TOWERS)}")
    _, _, mean, std = TOWERS[hf["model_type"]]
    resample = "bicubic"
    if processor is not None and processor.is_file():
        saved = json.loads(processor.read_text())
        mean, std = saved.get("image_mean", mean), saved.get("image_std", std)
        resample = RESAMPLE.get(saved.get("resample"), resample)
    return ImageEncoderConfig(
        image_size=hf.get("image_size", 224),
        patch_size=hf.get("patch_size", 32),
        dim=hf.get("vision_output_dim", hf["hidden_size"]),  # a tiled tower joins layers
        n_layers=hf["num_hidden_layers"],
        n_heads=hf.get("num_attention_heads", hf.get("attention_heads")),  # Mllama's name
        mlp_ratio=hf["intermediate_size"] / hf["hidden_size"],
        mean=tuple(mean),
        std=tuple(std),
        kind="hf_vision",
        hf_config=hf,
        resample=resample,
    )


class HFVisionEncoder(nn.Module):
    """pixels ``(B, 3, S, S)`` -> patch tokens ``(B, (S/P)^2, D)`` and mask ``(B, N)``; a
    tiled tower: tiles ``(B, T, 3, S, S)`` and aspect-ratio ids ``(B,)`` -> every tile's
    tokens ``(B, T * ((S/P)^2 + 1), D)``, masked on the empty tiles."""

    def __init__(self, config: ImageEncoderConfig):
        super().__init__()
        if config.kind != "hf_vision" or config.hf_config is None:
            raise ValueError(f"HFVisionEncoder needs an 'hf_vision' config; got {config.kind!r}")
        model_type = config.hf_config["model_type"]
        self.config = config
        self.dim = config.dim
        self.prefix_tokens = 1 if TOWERS[model_type][1] else 0
        self.tower = _tower(model_type, config.hf_config)
        self.tiled = model_type in TILED
        if self.tiled:  # aspect-ratio id (1-based; 0: none) -> how many tiles are real
            ratios = config.hf_config.get("supported_aspect_ratios") or []
            self.register_buffer(
                "tiles_of_ratio",
                torch.tensor([0] + [rows * cols for rows, cols in ratios]),
                persistent=False,
            )

    def forward(
        self, pixels: torch.Tensor, aspect_ratio_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tiled:
            return self._tiles(pixels, aspect_ratio_ids)
        hidden = self.tower(pixel_values=pixels).last_hidden_state  # (B, prefix + N, D)
        tokens = hidden[:, self.prefix_tokens :]
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return tokens, mask

    def _tiles(
        self, pixels: torch.Tensor, aspect_ratio_ids: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if pixels.dim() != 5 or aspect_ratio_ids is None:
            raise ValueError("a tiled tower reads tiles (B, T, 3, S, S) and aspect-ratio ids (B,)")
        B, T = pixels.shape[:2]
        real = torch.arange(T, device=pixels.device) < self.tiles_of_ratio[aspect_ratio_ids, None]
        hidden = self.tower(
            pixel_values=pixels[:, None],
            aspect_ratio_ids=aspect_ratio_ids[:, None],
            aspect_ratio_mask=real[:, None].long(),
        ).last_hidden_state  # (B, 1 picture, T, P, D)
        per_tile = hidden.shape[3]
        mask = real[:, :, None].expand(B, T, per_tile).reshape(B, T * per_tile)
        return hidden.reshape(B, T * per_tile, -1), mask


def load_hf_vision_weights(encoder: HFVisionEncoder, folder: str | Path) -> None:
    """Load the vision tower weights of ``folder`` into ``encoder``: names as the installed
    transformers saves them, or under ``vision_model.`` (whole models, older versions)."""
    state = read_hf_weights(folder)
    expected = encoder.tower.state_dict()
    prefixes = [p for p in ("", "vision_model.") if all(p + k in state for k in expected)]
    prefix = prefixes[0] if prefixes else ""
    dropped = (*DROPPED, "vision_model.head.", "head.")
    kept = {k: v for k, v in state.items() if not k.startswith(dropped)}
    mapped = {k.removeprefix(prefix): v for k, v in kept.items() if k.startswith(prefix)}
    leftover = sorted(k for k in kept if not k.startswith(prefix))
    if leftover:
        raise WeightsError(f"{folder}: {len(leftover)} unexpected: {', '.join(leftover[:10])}")
    check_shapes(expected, mapped, str(folder))
    encoder.tower.load_state_dict(mapped, strict=True)


def load_hf_vision_encoder(folder: str | Path) -> HFVisionEncoder:
    """The CLIP/SigLIP vision tower of ``folder`` as an image encoder (eval mode)."""
    encoder = HFVisionEncoder(hf_vision_config(folder))
    load_hf_vision_weights(encoder, folder)
    return encoder.eval()
