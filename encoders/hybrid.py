"""CNN hybrid image encoder: a CNN's feature map as the patch embeddings of a small ViT.

The hybrid of Dosovitskiy et al. (2021, section 3.1): instead of cutting the image into patches,
a convolutional network's feature map is the patch grid, one token per cell: the final map
(stride 32: ``(1280, 7, 7)`` -> 49 tokens for 224 px) or, with ``patch_size=16``, the output of
the last stride-16 stage (MobileNetV2: ``(96, 14, 14)`` -> 196 tokens), which keeps more of
where things are and what colour they have. Each cell's feature vector is normalised, projected
to ``dim``, given a learned position, and read by ``n_layers`` transformer blocks (timm's
``Block``; 0 blocks: the projection alone).

The CNN is a pretrained ImageNet backbone (torchvision's MobileNetV2, or EfficientNet-Lite0 in
timm's ``tf_efficientnet_lite0`` layout); what sits on top of it (``adapter``) is new and trains
with the projectors. The CNN's batch norms always use their ImageNet statistics, in training
too: our batches are small, and updating the statistics would drift the pretrained features.

Weights files are read as tensors only (safetensors or ``torch.load(weights_only=True)``) and
mapped by explicit key tables; every missing or left-over tensor is named in a ``WeightsError``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.models.vision_transformer import Block
from torch import nn

from encoders.image import ImageEncoderConfig, sincos_grid
from encoders.pretrained import check_shapes, map_keys, read_state_dict

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _mobilenet_v2() -> nn.Sequential:
    """torchvision's MobileNetV2 less its classifier: ``(B, 3, H, W) -> (B, 1280, H/32, W/32)``."""
    import torchvision  # only for this CNN: keeps `import encoders` light

    return torchvision.models.mobilenet_v2(weights=None).features


def _efficientnet_lite0() -> nn.Sequential:
    """EfficientNet-Lite0 (TF "same" padding, ReLU6, BN eps 1e-3) up to its 1x1 head conv, as
    timm builds it: ``(B, 3, H, W) -> (B, 1280, H/32, W/32)``; names are timm's."""
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    parts = ("conv_stem", "bn1", "blocks", "conv_head", "bn2")
    return nn.Sequential(OrderedDict((name, getattr(net, name)) for name in parts))


def _torchvision_keys(cnn: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, str]:
    """torchvision classifier file (``features.*``) -> our names."""
    return {f"features.{k}": k for k in cnn.state_dict()}


def _efficientnet_keys(cnn: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, str]:
    """EfficientNet-Lite file -> our (timm) names. A file in timm's layout maps as it is; one in
    the layout of ``efficientnet_lite_pytorch`` (``_conv_stem``, ``_blocks.{k}._expand_conv``...)
    maps block by block: its blocks are numbered through, timm's are nested by stage."""
    ours = list(cnn.state_dict())
    if "_conv_stem.weight" not in state:
        return {k: k for k in ours}
    stem_head = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1"}
    # first stage: depthwise-separable blocks (no expansion); then inverted residuals
    separable = {
        "conv_dw": "_depthwise_conv",
        "bn1": "_bn1",
        "conv_pw": "_project_conv",
        "bn2": "_bn2",
    }
    inverted = {
        "conv_pw": "_expand_conv",
        "bn1": "_bn0",
        "conv_dw": "_depthwise_conv",
        "bn2": "_bn1",
        "conv_pwl": "_project_conv",
        "bn3": "_bn2",
    }
    flat = {}  # (stage, index) -> running block number
    for stage, blocks in enumerate(cnn.blocks):
        for index in range(len(blocks)):
            flat[(stage, index)] = len(flat)
    table = {}
    for name in ours:
        module, param = name.rsplit(".", 1)
        if module in stem_head:
            table[f"{stem_head[module]}.{param}"] = name
            continue
        _, stage, index, part = module.split(".")
        rename = separable if int(stage) == 0 else inverted
        table[f"_blocks.{flat[(int(stage), int(index))]}.{rename[part]}.{param}"] = name
    return table


@dataclass(frozen=True)
class CNNSpec:
    """A CNN backbone: how to build it, its output channels and pixel normalisation, how a
    classifier file's names map onto ours, and which file parts are not ours (the classifier)."""

    build: Callable[[], nn.Sequential]
    channels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    key_table: Callable[[nn.Module, dict[str, torch.Tensor]], dict[str, str]]
    dropped: tuple[str, ...]
    cut16: Callable[[nn.Sequential], nn.Sequential]  # the network up to its stride-16 output
    channels16: int

    def network(self, stride: int) -> tuple[nn.Sequential, int]:
        """The backbone up to its stride-``stride`` output, and that output's channels."""
        full = self.build()
        return (full, self.channels) if stride == 32 else (self.cut16(full), self.channels16)


def _cut_efficientnet(net: nn.Sequential) -> nn.Sequential:
    """EfficientNet-Lite0 up to its fifth stage (112 channels, stride 16), names kept."""
    return nn.Sequential(OrderedDict(conv_stem=net.conv_stem, bn1=net.bn1, blocks=net.blocks[:5]))


CNNS: dict[str, CNNSpec] = {
    "mobilenet_v2": CNNSpec(
        _mobilenet_v2,
        1280,
        IMAGENET_MEAN,
        IMAGENET_STD,
        _torchvision_keys,
        ("classifier.",),
        cut16=lambda features: features[:14],  # through the 96-channel stage
        channels16=96,
    ),
    # TF-converted weights: inputs scaled to [-1, 1]
    "efficientnet_lite0": CNNSpec(
        _efficientnet_lite0,
        1280,
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
        _efficientnet_keys,
        ("_fc.", "classifier."),
        cut16=_cut_efficientnet,
        channels16=112,
    ),
}


def hybrid_config(
    cnn: str,
    image_size: int = 224,
    dim: int = 384,
    n_layers: int = 2,
    n_heads: int = 6,
    stride: int = 32,
) -> ImageEncoderConfig:
    """The ``ImageEncoderConfig`` of a ``cnn`` hybrid reading its stride-``stride`` feature map
    (32 or 16), with a ``dim``-wide, ``n_layers``-deep transformer on top (pixel normalisation:
    what the CNN was trained with)."""
    if cnn not in CNNS:
        raise ValueError(f"unknown CNN {cnn!r}; choose from {sorted(CNNS)}")
    spec = CNNS[cnn]
    return ImageEncoderConfig(
        image_size=image_size,
        patch_size=stride,
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        mean=spec.mean,
        std=spec.std,
        kind="cnn_hybrid",
        cnn=cnn,
    )


def sincos_positions(config: ImageEncoderConfig) -> torch.Tensor | None:
    """The fixed 2-D sin-cos table ``(1, h*w, D)`` of ``config`` (row-major over the grid, as
    the cells), times ``config.fixed_positions``; None when that is 0."""
    grid = config.image_size // config.patch_size
    table = sincos_grid(grid, config.dim, config.fixed_positions)
    return None if table is None else table.unsqueeze(0)


class FeatureMapTokens(nn.Module):
    """feature map ``(B, C, h, w)`` -> tokens ``(B, h*w, D)``: norm, linear, positions (learned,
    plus the fixed sin-cos table when ``config.fixed_positions``), blocks."""

    def __init__(self, config: ImageEncoderConfig, channels: int):
        super().__init__()
        self.in_norm = nn.LayerNorm(channels)
        self.proj = nn.Linear(channels, config.dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.n_tokens, config.dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        # computed from the config, never saved: None or (1, N, D)
        self.register_buffer("fixed_pos", sincos_positions(config), persistent=False)
        self.blocks = nn.Sequential(
            *(
                Block(config.dim, config.n_heads, config.mlp_ratio, qkv_bias=True)
                for _ in range(config.n_layers)
            )
        )
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        cells = feature_map.flatten(2).transpose(1, 2)  # (B, h*w, C), row-major over the grid
        x = self.proj(self.in_norm(cells)) + self.pos_embed  # (B, N, D)
        if self.fixed_pos is not None:
            x = x + self.fixed_pos
        return self.norm(self.blocks(x))


class HybridImageEncoder(nn.Module):
    """pixels ``(B, 3, H, W)`` -> tokens ``(B, N, D)`` and mask ``(B, N)`` (all True), with
    ``N = (H / s) * (W / s)`` for stride ``s = config.patch_size``. ``cnn``: the pretrained
    backbone (up to that stride); ``adapter``: the new part."""

    def __init__(self, config: ImageEncoderConfig):
        super().__init__()
        if config.kind != "cnn_hybrid" or config.cnn not in CNNS:
            raise ValueError(
                f"HybridImageEncoder needs a 'cnn_hybrid' config with a CNN from {sorted(CNNS)}; "
                f"got kind {config.kind!r}, cnn {config.cnn!r}"
            )
        self.config = config
        self.dim = config.dim
        cnn, channels = CNNS[config.cnn].network(config.patch_size)
        self.cnn = cnn.eval()  # always: see train()
        self.adapter = FeatureMapTokens(config, channels)

    def train(self, mode: bool = True) -> HybridImageEncoder:
        """Train mode for the adapter only: the CNN keeps its batch-norm statistics."""
        super().train(mode)
        self.cnn.eval()
        return self

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.adapter(self.cnn(pixels))  # (B, C, h, w) -> (B, N, D)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return tokens, mask


def load_cnn_weights(encoder: HybridImageEncoder, weights: str | Path) -> None:
    """Load an ImageNet classifier file (safetensors or tensor-only torch file) into the CNN of
    ``encoder``; the classifier is dropped, every other tensor must fit the whole network
    (a stride-16 encoder then keeps the part it uses)."""
    spec = CNNS[encoder.config.cnn]
    state = read_state_dict(weights)
    source = f"{weights} ({encoder.config.cnn})"
    full = encoder.cnn if encoder.config.patch_size == 32 else spec.build()
    mapped = map_keys(state, spec.key_table(full, state), spec.dropped, source)
    check_shapes(full.state_dict(), mapped, source)
    full.load_state_dict(mapped, strict=True)
    if full is not encoder.cnn:
        used = full.state_dict()
        encoder.cnn.load_state_dict({k: used[k] for k in encoder.cnn.state_dict()}, strict=True)


def load_hybrid_encoder(
    cnn: str, weights: str | Path, image_size: int = 224, **sizes: int
) -> HybridImageEncoder:
    """A ``cnn`` hybrid whose CNN holds the weights in file ``weights`` (adapter: fresh)."""
    encoder = HybridImageEncoder(hybrid_config(cnn, image_size, **sizes))
    load_cnn_weights(encoder, weights)
    return encoder.eval()
