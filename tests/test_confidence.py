"""Confidence: calibrated scores on every output, abstention below a threshold."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import mmllm
from encoders.recognizers import COCO_OFFSET
from mmllm import InputError, MediaBatch
from mmllm.confidence import (
    PHOTO,
    Calibration,
    Logistic,
    MediaDistance,
    auroc,
    expected_calibration_error,
    in_domain_prob,
    recognition_features,
)
from mmllm.tasks import UNSURE, ScoredText

SHIPPED_TINY = "mmllm-tiny"


def test_logistic_fit_recovers_a_known_curve():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 2))
    p = 1 / (1 + np.exp(-(2.0 * x[:, 0] - 1.0 * x[:, 1] + 0.5)))
    y = (rng.random(4000) < p).astype(float)
    fit = Logistic.fit(x, y, l2=0.0)
    assert np.allclose(fit.weights, (2.0, -1.0), atol=0.2) and abs(fit.bias - 0.5) < 0.2


def test_ece_and_auroc_on_known_cases():
    right = np.array([1, 0] * 50, float)
    assert expected_calibration_error(np.full(100, 0.5), right) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(100, 0.9), right) == pytest.approx(0.4)
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert auroc(np.array([1.0]), np.array([1.0])) == 0.5


def test_media_distance_is_larger_off_the_training_inputs(tmp_path):
    rng = torch.Generator().manual_seed(0)
    train = torch.randn(500, 8, generator=rng)
    held = torch.randn(200, 8, generator=rng)
    far = torch.randn(200, 8, generator=rng) * 3 + 2
    stats = MediaDistance.fit({"image": train})
    stats.set_units(held, ["image"] * 200)
    stats.save(tmp_path / "stats.safetensors")
    stats = MediaDistance.load(tmp_path / "stats.safetensors")
    near_d = stats(held, ["image"] * 200).numpy()
    far_d = stats(far, ["image"] * 200).numpy()
    assert np.median(near_d) == pytest.approx(1.0, abs=0.05)
    assert auroc(-near_d, -far_d) > 0.99
    assert stats(held[:1], ["audio"]).item() == float("inf")  # a kind never trained on
    curve = Logistic((-10.0,) + (0.0,) * 8, 5.0)
    assert in_domain_prob(curve, np.array([np.inf, 1.0]), ["audio", None]).tolist() == [0.0, 1.0]


def test_images_nearer_the_photos_statistics_are_photos(tmp_path):
    rng = torch.Generator().manual_seed(0)
    synthetic = torch.randn(400, 8, generator=rng)
    photos = torch.randn(400, 8, generator=rng) + 4
    stats = MediaDistance.fit({"image": synthetic, PHOTO: photos})
    stats.set_units(torch.cat([synthetic, photos]), ["image"] * 400 + [PHOTO] * 400)
    new = torch.cat([torch.randn(5, 8, generator=rng), torch.randn(5, 8, generator=rng) + 4])
    distance, kinds = stats.assign(new, ["image"] * 10)
    assert kinds == ["image"] * 5 + [PHOTO] * 5
    assert float(distance.max()) < 3  # each measured against its own statistics
    assert stats.assign(new[:2], ["audio", None])[1] == ["audio", None]  # images only
    # a calibration fitted before the photo kind reads with no weight for it
    old = [Logistic((-1.0, 0.0, 0.0), 1.0), Logistic((1.0,) * 4, 0.0), Logistic((1.0,) * 3, 0.0)]
    Calibration(*old, 0.5, {}).save(tmp_path)
    loaded = Calibration.load(tmp_path)
    assert loaded.caption.weights == (1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0)
    assert loaded.in_domain.weights == (-1.0,) + (0.0,) * 8


def test_a_joint_caption_curve_reads_the_distance_and_survives_a_save(tmp_path):
    joint = Calibration(
        Logistic((-1.0,) + (0.0,) * 8, 1.0),
        # ..., photo, log distance, top class, top object, the photos' own three slopes
        Logistic((1.0, 0.0, 0.0, 0.0, -1.0, -2.0, 2.0, 0.0, 0.0, 0.0, 0.0), 3.0),
        Logistic((1.0,) + (0.0,) * 7, 0.0),
        0.5,
        {},
        joint_caption=True,
    )
    joint.save(tmp_path)
    loaded = Calibration.load(tmp_path)
    assert loaded == joint
    features = np.array([[-0.1, -0.5]] * 3)
    near_far = loaded.caption_confidence(
        features, np.array([1.0, 4.0, 1.0]), ["image"] * 2 + [PHOTO]
    )
    assert near_far[0] > near_far[1]  # farther from the training inputs: less sure
    assert near_far[0] > near_far[2]  # a photo: its own intercept
    sure = loaded.caption_confidence(features[2:], np.ones(1), [PHOTO], np.array([[0.9, 0.0]]))
    assert sure[0] > near_far[2]  # a photo the recognizers are sure of


def test_recognition_features_take_each_rows_surest_class_and_object():
    rows = [
        torch.tensor([[281, 0.7, 0, 0, 1, 1], [COCO_OFFSET + 17, 0.9, 0, 0, 1, 1]]),
        torch.tensor([[3, 0.2, 0, 0, 1, 1], [COCO_OFFSET + 1, 0.0, 0, 0, 0, 0]]),
        torch.tensor([[5, 0.4, 0, 0, 1, 1]]),
    ]
    images = [[torch.zeros(3, 8, 8)], [torch.zeros(3, 8, 8)] * 2, []]
    batch = MediaBatch.from_lists(images=images, recognitions=[[rows[0]], rows[1:], []])
    found = recognition_features(batch, 3)
    assert np.allclose(found, [[0.7, 0.9], [0.4, 0.0], [0.0, 0.0]])
    assert recognition_features(None, 2).tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_scored_text_is_a_str_that_abstains_below_its_threshold():
    text = ScoredText("a red circle", 0.3, calibrated=True)
    assert text == "a red circle" and text.upper() == "A RED CIRCLE" and not text.abstained
    low = text.with_limit(0.5)
    assert low == UNSURE and low.abstained and low.guess == "a red circle"
    assert pickle.loads(pickle.dumps(low)).guess == "a red circle"
    assert text.with_limit(0.2) == "a red circle"


def test_existence_answers_have_their_own_curve_and_keep_it_through_a_save(tmp_path):
    """Answers read off the recognizers (``mmllm.evidence``) are calibrated by a curve on
    their own probability, per "yes", "no" about a known thing, "no" about an unknown one."""
    curve = Logistic((2.0, 1.0, 0.5, 0.0), -0.4)
    calibration = Calibration(
        Logistic((-1.0,) + (0.0,) * 8, 1.0),
        Logistic((1.0,) + (0.0,) * 6, 0.0),
        Logistic((1.0,) + (0.0,) * 7, 0.0),
        0.5,
        {},
        existence=curve,
    )
    calibration.save(tmp_path)
    loaded = Calibration.load(tmp_path)
    assert loaded.existence == curve
    prob = np.array([0.8, 0.8, 0.5, 0.3])
    yes, known = np.array([1, 0, 0, 1]), np.array([1, 1, 0, 1])
    found = loaded.existence_confidence(prob, yes, known)
    logit = np.log(prob / (1 - prob))
    z = np.array([2 * logit[0] + 0.5, logit[1], 0.0, 2 * logit[3] + 0.5]) - 0.4
    expected = 1 / (1 + np.exp(-z))
    assert found == pytest.approx(expected)
    assert found[0] > found[1]  # a sure "yes" counts for more here than a "no" as sure
    assert found[2] == pytest.approx(1 / (1 + np.exp(0.4)))  # an unknown thing: the bias alone
    older = Calibration(loaded.in_domain, loaded.caption, loaded.answer, 0.5, {})
    older.save(tmp_path)
    assert Calibration.load(tmp_path).existence_confidence(prob, yes, known) is None


@pytest.fixture(scope="module")
def calibrated(tiny_checkpoint, tmp_path_factory):
    """The random tiny checkpoint with a calibration whose curves are known."""
    api = mmllm.load(tiny_checkpoint, device="cpu")
    api.calibration = Calibration(
        in_domain=Logistic((-10.0,) + (0.0,) * 8, 5.0),
        caption=Logistic((1.0,) + (0.0,) * 6, 2.0),
        answer=Logistic((1.0,) + (0.0,) * 7, 2.0),
        alt_text_threshold=0.5,
        measured={},
    )
    dim = api.model.config.decoder.dim
    api.media_distance = MediaDistance.fit({"image": torch.randn(300, 2 * dim)})
    return api


def test_every_output_carries_a_confidence(calibrated):
    image = Image.new("RGB", (32, 32), "red")
    caption = calibrated.caption(image, max_new_tokens=4)
    assert isinstance(caption, ScoredText) and caption.calibrated
    assert 0.0 <= caption.confidence <= 1.0 and len(caption.token_scores) == 2
    assert 0.0 <= calibrated.alt_text(image).confidence <= 1.0
    answer = calibrated.ask(image, "what color is it?")
    assert 0.0 <= answer.confidence <= 1.0 and answer.calibrated
    generated = calibrated.generate("what is it?", images=[image], max_new_tokens=4)
    assert isinstance(generated, ScoredText) and 0.0 <= generated.confidence <= 1.0


def test_below_min_confidence_the_output_says_so(calibrated):
    image = Image.new("RGB", (32, 32), "blue")
    caption = calibrated.caption(image, max_new_tokens=4, min_confidence=1.0)
    assert caption == UNSURE and caption.abstained and caption.guess
    answer = calibrated.ask(image, "what color is it?", min_confidence=1.0)
    assert answer.abstained and answer.text == UNSURE and answer.guess
    assert calibrated.caption(image, max_new_tokens=4, min_confidence=0.0).abstained is False
    with pytest.raises(InputError, match="min_confidence"):
        calibrated.caption(image, min_confidence=1.5)


def test_an_uncalibrated_checkpoint_says_so(tiny_checkpoint):
    api = mmllm.load(tiny_checkpoint, device="cpu")
    caption = api.caption(Image.new("RGB", (32, 32)), max_new_tokens=4)
    assert not caption.calibrated and 0.0 <= caption.confidence <= 1.0


def test_shipped_tiny_is_calibrated_and_doubts_noise():
    api = mmllm.load(SHIPPED_TINY, device="cpu")
    assert api.calibration is not None and api.media_distance is not None
    scene = api.caption("demos/examples/shapes2.png")
    rng = np.random.default_rng(0)
    noise = api.caption(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert scene.calibrated and scene.confidence > api.calibration.alt_text_threshold
    assert noise.confidence < api.calibration.alt_text_threshold
