"""Image encoder: a Vision Transformer (Dosovitskiy et al., 2021) built with timm.

Patch embeddings + transformer blocks, no class token and no pooling: every patch becomes one
token. A ``timm_name`` builds any timm ViT architecture by name instead, as its pretrained
weights expect (class and register tokens included, pooling head and classifier dropped); its
tokens are the patch tokens of timm's ``forward_features``. ``kind="cnn_hybrid"`` puts a CNN's
feature map in place of the patch embedding instead (``encoders.hybrid``); ``kind="hf_vision"``
wraps a Hugging Face CLIP/SigLIP tower (``encoders.hf_vision``). Weights are loaded separately,
from local files, never downloaded here (``encoders.pretrained``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import timm
import torch
from timm.layers import PatchEmbed, build_sincos2d_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

IMAGE_KINDS = ("vit", "cnn_hybrid", "hf_vision")
HYBRID_STRIDES = (32, 16)  # a CNN hybrid reads the final feature map or the stride-16 stage


def sincos_grid(grid: int, dim: int, scale: float) -> torch.Tensor | None:
    """A fixed 2-D sin-cos position table ``(grid * grid, dim)``, row-major over the grid,
    values in [-1, 1] times ``scale``; None when ``scale`` is 0."""
    if not scale:
        return None
    return scale * build_sincos2d_pos_embed([grid, grid], dim)


@dataclass(frozen=True)
class ImageEncoderConfig:
    """Size of the image ViT. ``mean``/``std`` are the pixel normalisation it expects.

    With ``timm_name`` the architecture is timm's; the size fields then describe it (filled in
    by ``encoders.pretrained.image_config_from_timm``).

    ``kind="cnn_hybrid"``: a feature map of the ``cnn`` gives one token per cell, projected to
    ``dim`` and read by ``n_layers`` transformer blocks (0: the projection alone); ``patch_size``
    is its stride: 32 (the final map) or 16 (the last stride-16 stage: 4x the tokens, finer
    detail); see ``encoders.hybrid``.

    ``fixed_positions`` (CNN hybrids): a fixed 2-D sin-cos position table of this scale is added
    to the learned positions. The learned table starts near zero and AdamW moves each entry by
    about the learning rate per step, so it stays small beside the cell features (norm ~1 against
    ~27 in mmllm-smol); at scale 1 the fixed table's tokens have norm ~14 and where each cell
    lies is plain to the cross-attention from the first step.

    ``kind="hf_vision"``: a Hugging Face vision tower (CLIP, SigLIP, ViT) built from
    ``hf_config`` (its config, verbatim); the size fields describe it (``encoders.hf_vision``).

    ``resample``: how a picture is resized to ``image_size`` (``bicubic`` or ``bilinear``, as
    the encoder's own preprocessing does).
    """

    image_size: int = 64
    patch_size: int = 8
    dim: int = 192
    n_layers: int = 4
    n_heads: int = 3
    mlp_ratio: float = 4.0
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    timm_name: str | None = None
    kind: str = "vit"
    cnn: str | None = None
    hf_config: dict[str, Any] | None = None
    stem: str = "patch"  # "conv": a stride-2 convolution stack as the patch embedding
    fixed_positions: float = 0.0  # cnn_hybrid: scale of a fixed 2-D sin-cos table (0: none)
    resample: str = "bicubic"

    def __post_init__(self) -> None:
        if self.resample not in ("bicubic", "bilinear"):
            raise ValueError(f"resample must be 'bicubic' or 'bilinear', got {self.resample!r}")
        if self.kind not in IMAGE_KINDS:
            raise ValueError(f"image encoder kind must be one of {IMAGE_KINDS}, got {self.kind!r}")
        if (self.kind == "cnn_hybrid") != (self.cnn is not None):
            raise ValueError("an image encoder has a 'cnn' exactly when its kind is 'cnn_hybrid'")
        if (self.kind == "hf_vision") != (self.hf_config is not None):
            raise ValueError("an image encoder has 'hf_config' exactly when it is 'hf_vision'")
        if self.stem not in ("patch", "conv"):
            raise ValueError(f"image stem must be 'patch' or 'conv', got {self.stem!r}")
        if self.fixed_positions < 0 or (self.fixed_positions and self.kind != "cnn_hybrid"):
            raise ValueError(
                f"fixed_positions is a scale >= 0, for a 'cnn_hybrid' encoder; got "
                f"{self.fixed_positions} for kind {self.kind!r}"
            )
        if self.stem == "conv" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise ValueError(f"a conv stem needs a power-of-2 patch_size, got {self.patch_size}")
        if self.kind == "cnn_hybrid" and (
            self.patch_size not in HYBRID_STRIDES or self.image_size % self.patch_size
        ):
            raise ValueError(
                f"a CNN hybrid's patch_size is the stride of the CNN stage it reads "
                f"({' or '.join(map(str, HYBRID_STRIDES))}) and divides image_size; got "
                f"patch_size {self.patch_size}, image_size {self.image_size}"
            )

    @property
    def n_tokens(self) -> int:
        """Tokens per image: one per patch (plus a ViT tower's class token, which it keeps;
        a tiled tower: per tile, of its most tiles)."""
        grid = (self.image_size // self.patch_size) ** 2
        tower = self.hf_config.get("model_type") if self.kind == "hf_vision" else None
        if tower == "mllama_vision_model":
            return self.hf_config.get("max_num_tiles", 4) * (grid + 1)
        return grid + int(tower in ("vit", "blip_vision_model"))


class ConvStemPatchEmbed(PatchEmbed):
    """Patch embedding by a stack of 3x3 stride-2 convolutions instead of one large-stride one
    ("Early convolutions help transformers see better", Xiao et al., 2021): the same token grid,
    a better-conditioned start for a ViT trained from scratch on little data."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, **kwargs):
        super().__init__(img_size, patch_size, in_chans, embed_dim, **kwargs)
        layers: list[nn.Module] = []
        channels, width = in_chans, max(embed_dim // (patch_size // 2), 16)
        for _ in range(patch_size.bit_length() - 1):  # log2(patch_size) stride-2 convs
            layers += [
                nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.GELU(),
            ]
            channels, width = width, min(width * 2, embed_dim)
        layers.append(nn.Conv2d(channels, embed_dim, 1))
        self.proj = nn.Sequential(*layers)


class ImageEncoder(nn.Module):
    """pixels ``(B, 3, H, W)`` -> tokens ``(B, N, D)`` and mask ``(B, N)`` (all True)."""

    def __init__(self, config: ImageEncoderConfig):
        super().__init__()
        if config.kind != "vit":
            raise ValueError(f"ImageEncoder needs a 'vit' config; got {config.kind!r}")
        self.config = config
        if config.timm_name is not None:
            self.vit = timm.create_model(
                config.timm_name,
                pretrained=False,
                img_size=config.image_size,
                num_classes=0,
                global_pool="",
            )
        else:
            self.vit = VisionTransformer(
                img_size=config.image_size,
                patch_size=config.patch_size,
                embed_dim=config.dim,
                depth=config.n_layers,
                num_heads=config.n_heads,
                mlp_ratio=config.mlp_ratio,
                class_token=False,
                global_pool="",
                num_classes=0,
                embed_layer=ConvStemPatchEmbed if config.stem == "conv" else PatchEmbed,
            )
        self.dim = self.vit.embed_dim

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.vit.forward_features(pixels)  # (B, N, D)
        tokens = tokens[:, self.vit.num_prefix_tokens :]  # drop class/register tokens
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return tokens, mask
