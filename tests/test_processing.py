"""Input safety: every bad image or audio input is a typed error; odd-but-valid ones normalise."""

import io

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from encoders import AudioEncoderConfig, ImageEncoderConfig
from mmllm import AudioError, ImageError
from mmllm.processing import AudioProcessor, ImageProcessor, load_image

IMAGES = ImageProcessor(ImageEncoderConfig(image_size=32))
AUDIO = AudioProcessor(AudioEncoderConfig(max_seconds=4))


def png_bytes(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        IMAGES(tmp_path / "empty.png")


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        IMAGES(tmp_path / "nope.png")


def test_undecodable_bytes():
    with pytest.raises(ImageError, match="cannot decode"):
        IMAGES(b"this is not an image at all")


def test_truncated_png():
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = png_bytes(Image.fromarray(noise))
    with pytest.raises(ImageError, match="corrupt or truncated"):
        IMAGES(data[: len(data) // 2])


def test_decompression_bomb_refused_from_the_header():
    data = png_bytes(Image.new("L", (9000, 9000)))
    with pytest.raises(ImageError, match="over the limit"):
        load_image(data, max_pixels=1_000_000)


@pytest.mark.parametrize(
    "image",
    [
        Image.new("CMYK", (20, 10), (0, 255, 0, 0)),
        Image.new("L", (20, 10), 128),
        Image.new("I;16", (20, 10), 40000),
        Image.new("RGBA", (20, 10), (255, 0, 0, 0)),
        Image.new("P", (20, 10)),
        Image.new("1", (20, 10)),
        Image.new("RGB", (1, 1)),
        Image.new("RGB", (2000, 1)),
    ],
    ids=["cmyk", "grey", "16bit", "alpha", "palette", "bilevel", "1x1", "extreme-aspect"],
)
def test_unusual_modes_and_sizes_normalise_to_rgb_pixels(image):
    pixels = IMAGES(png_bytes(image, "TIFF" if image.mode == "CMYK" else "PNG"))
    assert pixels.shape == (3, 32, 32) and torch.isfinite(pixels).all()


def test_transparent_pixels_become_white():
    pixels = IMAGES(Image.new("RGBA", (8, 8), (255, 0, 0, 0)))
    assert torch.allclose(pixels, torch.ones_like(pixels))  # white, normalised with 0.5/0.5


def test_exif_orientation_applied_once():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    upright = load_image(png_bytes(image, "JPEG", exif=exif.tobytes()))
    assert upright.size == (20, 40)
    assert load_image(upright).size == (20, 40)  # loading the upright image again changes nothing


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = io.BytesIO()
    frames[0].save(data, format="GIF", save_all=True, append_images=frames[1:])
    assert load_image(data.getvalue()).getpixel((0, 0))[0] > 200


def test_arrays_and_tensors_are_accepted():
    array = np.zeros((10, 12, 3), dtype=np.uint8)
    assert IMAGES(array).shape == (3, 32, 32)
    assert IMAGES(torch.rand(3, 10, 12)).shape == (3, 32, 32)


def test_bad_array_shape():
    with pytest.raises(ImageError, match=r"\(H, W"):
        IMAGES(np.zeros((2, 3, 4, 5)))


def wav_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def test_audio_zero_length():
    with pytest.raises(AudioError, match="no samples"):
        AUDIO(np.zeros(0, dtype=np.float32))


def test_audio_shorter_than_one_fft_window_is_padded():
    assert AUDIO(np.ones(10, dtype=np.float32)).shape == (400,)


def test_audio_too_long_refused_from_the_header():
    with pytest.raises(AudioError, match="over the limit of 4 s"):
        AUDIO(wav_bytes(np.zeros(16000 * 5, dtype=np.float32), 16000))


def test_audio_nan_refused():
    with pytest.raises(AudioError, match="NaN"):
        AUDIO(np.array([0.0, np.nan] * 300, dtype=np.float32))


def test_silence_is_fine():
    assert AUDIO(np.zeros(8000, dtype=np.float32)).abs().sum() == 0


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_stereo_in_either_layout_mixes_to_mono(layout):
    left, right = np.ones(8000, dtype=np.float32), -np.ones(8000, dtype=np.float32) * 0.5
    stereo = np.stack([left, right]) if layout == "channels_first" else np.stack([left, right], 1)
    mono = AUDIO(stereo, sample_rate=16000)
    assert mono.shape == (8000,) and torch.allclose(mono, torch.full((8000,), 0.25))


def test_int16_pcm_is_scaled_to_unit_range():
    mono = AUDIO(np.full(8000, 16384, dtype=np.int16), sample_rate=16000)
    assert torch.allclose(mono, torch.full((8000,), 0.5))


def test_resampled_to_the_model_rate():
    assert AUDIO(wav_bytes(np.zeros(44100, dtype=np.float32), 44100)).shape == (16000,)


@pytest.mark.parametrize("rate", [0, -5, 10_000_000])
def test_invalid_sample_rate(rate):
    with pytest.raises(AudioError, match="sample rate"):
        AUDIO(np.zeros(8000, dtype=np.float32), sample_rate=rate)


def test_corrupt_audio_file(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(AudioError, match="cannot decode"):
        AUDIO(tmp_path / "bad.wav")


@pytest.mark.parametrize("rate", [199_999, 44_101, 12_345, 383_999])
def test_coprime_sample_rates_resample_in_bounded_memory(rate):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = AUDIO(np.zeros(rate // 4, dtype=np.float32), sample_rate=rate)  # 0.25 s
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert abs(out.shape[0] - 4000) <= 8 and grown_mb < 500


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_common_sample_rates_resample_exactly(rate):
    assert AUDIO(np.zeros(rate, dtype=np.float32), sample_rate=rate).shape == (16000,)


def test_dataset_audio_longer_than_the_encoder_takes_is_cut_not_refused():
    cut = AudioProcessor(AudioEncoderConfig(max_seconds=4), truncate=True)
    clip = wav_bytes(np.full(16000 * 6, 0.1, dtype=np.float32), 16000)
    assert cut(clip).shape == (16000 * 4,)
    odd_rate = wav_bytes(np.full(16001 * 6, 0.1, dtype=np.float32), 16001)  # approximate ratio
    assert cut(odd_rate).shape == (16000 * 4,)
    with pytest.raises(AudioError, match="over the limit of 30 s"):  # the memory bound stays
        cut(wav_bytes(np.zeros(16000 * 31, dtype=np.float32), 16000))


@pytest.mark.parametrize(
    "pixels",
    [
        np.full((8, 8, 3), np.nan, dtype=np.float32),
        np.array([[0.5, np.inf], [0.1, 0.2]]),
        torch.full((3, 8, 8), float("nan")),
        torch.tensor([[[0.5, -float("inf")]]]).expand(3, 2, 2),
    ],
    ids=["nan array", "inf array", "nan tensor", "-inf tensor"],
)
def test_image_with_non_finite_values_is_refused(pixels):
    with pytest.raises(ImageError, match="non-finite"):
        IMAGES(pixels)
