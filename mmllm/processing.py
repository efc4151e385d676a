"""Turn user media into model inputs: any image -> pixels ``(3, H, W)``, any audio -> ``(S,)``.

Images: path, bytes, PIL image, numpy array ``(H, W[, C])`` or tensor ``(C, H, W)``; decoded with
a pixel limit checked from the header, EXIF-rotated, converted to RGB, resized, normalised.
Audio: path, bytes, numpy array or tensor in either channel layout, with its sample rate; decoded
with soundfile, mixed to mono, resampled with torchaudio, integer PCM scaled to [-1, 1].
A model that reads recognitions (``encoders.recognizers``) also gets, per image, what the
classifier and detector find in the decoded picture at its own resolution.
Every failure is an ``ImageError``/``AudioError`` naming the input and the limit.
"""

from __future__ import annotations

import io
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio
from PIL import Image, ImageOps, UnidentifiedImageError

from encoders import AudioEncoderConfig, ImageEncoderConfig
from encoders.hf_vision import TILED
from encoders.recognizers import Recognizer, RecognizerConfig, to_rgb_array
from mmllm.errors import AudioError, ImageError, InputError
from mmllm.model.media import MediaBatch, TiledPixels

MAX_IMAGE_PIXELS = 64_000_000
MAX_AUDIO_SECONDS = 30.0


def describe(source: Any) -> str:
    """A short name for an input, for error messages (never the full bytes)."""
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def load_image(source: Any, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode ``source`` to an RGB PIL image, upright per its EXIF orientation."""
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = _array_to_image(source)
    elif isinstance(source, torch.Tensor):
        array = source.detach().cpu()
        if array.ndim == 3 and array.shape[0] in (1, 3, 4):
            array = array.permute(1, 2, 0)
        if array.is_floating_point():
            if not torch.isfinite(array).all():
                raise ImageError("image tensor holds non-finite values (NaN or infinity)")
            array = (array.clamp(0, 1) * 255).round().to(torch.uint8)
        image = _array_to_image(array.numpy())
    else:
        image = _open_image(source, max_pixels)
    if image.width * image.height > max_pixels:
        raise ImageError(
            f"image {describe(source)} has {image.width}x{image.height} pixels, over the "
            f"limit of {max_pixels}"
        )
    if image.width < 1 or image.height < 1:
        raise ImageError(f"image {describe(source)} is empty")
    if getattr(image, "is_animated", False):
        image.seek(0)
    image = ImageOps.exif_transpose(image)
    if image.mode not in ("RGB",):
        if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        elif image.mode.startswith("I;16") or image.mode in ("I", "F"):
            array = np.asarray(image, dtype=np.float64)
            peak = array.max() or 1.0
            image = Image.fromarray((array / peak * 255).astype(np.uint8))
        image = image.convert("RGB")
    return image


def _open_image(source: Any, max_pixels: int) -> Image.Image:
    name = describe(source)
    if isinstance(source, bytes):
        if not source:
            raise ImageError("image <0 bytes> is empty")
        stream: Any = io.BytesIO(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"image {name} does not exist or is not a file")
        if path.stat().st_size == 0:
            raise ImageError(f"image {name} is an empty file")
        stream = path
    else:
        raise ImageError(f"unsupported image input {name}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            if image.width * image.height > max_pixels:  # from the header, before decoding
                raise ImageError(
                    f"image {name} has {image.width}x{image.height} pixels, over the limit of "
                    f"{max_pixels}"
                )
            image.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(
            f"image {name} is over the limit of {max_pixels} pixels (a decompression bomb)"
        ) from err
    except UnidentifiedImageError as err:
        raise ImageError(f"cannot decode image {name}: {err}") from err
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"image {name} is corrupt or truncated: {err}") from err
    return image


def _array_to_image(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    if array.dtype != np.uint8:
        if array.dtype.kind not in "biuf":
            raise ImageError(f"image array must hold numbers, got dtype {array.dtype}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ImageError("image array holds non-finite values (NaN or infinity)")
        with np.errstate(over="ignore", invalid="ignore"):
            array = array.astype(np.float64)
            array = np.clip(array * 255 if array.max() <= 1.0 else array, 0, 255)
        array = array.astype(np.uint8)
    return Image.fromarray(array)


class ImageProcessor:
    """Any image -> normalised pixels ``(3, S, S)`` for an encoder of ``config``; for a tiled
    tower, ``TiledPixels`` laid out by the tower's own image processor (transformers')."""

    def __init__(self, config: ImageEncoderConfig, max_pixels: int = MAX_IMAGE_PIXELS):
        self.size = config.image_size
        self.resample = getattr(Image.Resampling, config.resample.upper())
        self.mean = torch.tensor(config.mean).view(3, 1, 1)
        self.std = torch.tensor(config.std).view(3, 1, 1)
        self.max_pixels = max_pixels
        self.tiler = _tiler(config, self.resample)

    def __call__(self, source: Any) -> torch.Tensor | TiledPixels:
        return self.pixels(load_image(source, self.max_pixels))

    def pixels(self, image: Image.Image) -> torch.Tensor | TiledPixels:
        """A decoded RGB image -> normalised pixels ``(3, S, S)`` (or its tiles)."""
        if self.tiler is not None:
            out = self.tiler(images=[[image]], return_tensors="pt")
            ratio = int(out["aspect_ratio_ids"][0, 0])
            return TiledPixels(out["pixel_values"][0, 0].float(), ratio)
        image = image.resize((self.size, self.size), self.resample)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (pixels - self.mean) / self.std


def _tiler(config: ImageEncoderConfig, resample: Image.Resampling):
    """transformers' image processor of a tiled vision tower (Llama 3.2 Vision's), set as the
    encoder's config says; None for any other encoder."""
    hf = config.hf_config if config.kind == "hf_vision" else None
    if not hf or hf.get("model_type") not in TILED:
        return None
    from transformers import MllamaImageProcessor  # heavy: only for this tower

    return MllamaImageProcessor(
        size={"height": config.image_size, "width": config.image_size},
        max_image_tiles=hf.get("max_num_tiles", 4),
        resample=resample,
        image_mean=list(config.mean),
        image_std=list(config.std),
    )


def resample(waveform: torch.Tensor, rate: int, target: int) -> torch.Tensor:
    """``waveform (S,)`` from ``rate`` to ``target`` Hz with torchaudio's band-limited resampler.

    torchaudio's filter bank grows with ``rate / gcd(rate, target)``: a coprime rate such as
    199,999 Hz would need gigabytes. The ratio is therefore taken as the nearest fraction with a
    denominator of at most 1000 (exact for every common rate: 8k, 22.05k, 44.1k, 48k, ...; off by
    under 0.1% otherwise), which bounds memory and time for any rate.
    """
    ratio = Fraction(target, rate).limit_denominator(1000)
    return torchaudio.functional.resample(waveform, ratio.denominator, ratio.numerator)


def audio_limit(window: float, max_seconds: float, truncate: bool) -> float:
    """The longest clip accepted, in seconds: the encoder's ``window`` (capped by
    ``max_seconds``), or with ``truncate`` (longer clips cut to the window) ``max_seconds``."""
    return max(max_seconds, window) if truncate else min(max_seconds, window)


class AudioProcessor:
    """Any audio -> mono float32 waveform ``(S,)`` at the encoder's sample rate.

    A clip longer than the encoder takes (``config.max_seconds``) is refused, from the file
    header when there is one; with ``truncate`` (datasets: training and evaluation) it is cut to
    that length instead, and only clips over ``max_seconds`` (the memory bound) are refused.
    """

    def __init__(
        self,
        config: AudioEncoderConfig,
        max_seconds: float = MAX_AUDIO_SECONDS,
        truncate: bool = False,
    ):
        self.sample_rate = config.sample_rate
        self.min_samples = config.n_fft
        self.keep_seconds = config.max_seconds
        self.max_seconds = audio_limit(config.max_seconds, max_seconds, truncate)

    def __call__(self, source: Any, sample_rate: int | None = None) -> torch.Tensor:
        name = describe(source)
        if isinstance(source, (str, Path, bytes)):
            waveform, sample_rate = self._decode(source)
        else:
            if sample_rate is None:
                sample_rate = self.sample_rate
            waveform = self._to_channels_first(source, name)
        if not isinstance(sample_rate, int) or not 1000 <= sample_rate <= 384_000:
            raise AudioError(f"audio {name}: invalid sample rate {sample_rate!r} (1000-384000 Hz)")
        seconds = waveform.shape[-1] / sample_rate
        if seconds > self.max_seconds:
            raise AudioError(
                f"audio {name} is {seconds:.1f} s long, over the limit of {self.max_seconds:g} s"
            )
        if waveform.shape[-1] == 0:
            raise AudioError(f"audio {name} has no samples")
        if not torch.isfinite(waveform).all():
            raise AudioError(f"audio {name} contains NaN or infinite samples")
        mono = waveform.mean(0)[: int(self.keep_seconds * sample_rate)]
        if sample_rate != self.sample_rate:
            mono = resample(mono, sample_rate, self.sample_rate)
            mono = mono[: int(self.keep_seconds * self.sample_rate)]  # the ratio is approximate
        if mono.shape[-1] < self.min_samples:  # shorter than one FFT window: pad with silence
            mono = F.pad(mono, (0, self.min_samples - mono.shape[-1]))
        return mono.contiguous()

    def _decode(self, source: str | Path | bytes) -> tuple[torch.Tensor, int]:
        name = describe(source)
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise AudioError(f"audio {name} does not exist or is not a file")
            if path.stat().st_size == 0:
                raise AudioError(f"audio {name} is an empty file")
        elif not source:
            raise AudioError("audio <0 bytes> is empty")
        stream = io.BytesIO(source) if isinstance(source, bytes) else source
        try:
            info = sf.info(stream)
            if info.duration > self.max_seconds:  # from the header, before decoding
                raise AudioError(
                    f"audio {name} is {info.duration:.1f} s long, over the limit of "
                    f"{self.max_seconds:g} s"
                )
            if isinstance(stream, io.BytesIO):
                stream.seek(0)
            data, rate = sf.read(stream, dtype="float32", always_2d=True)  # (S, C)
        except AudioError:
            raise
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
            raise AudioError(f"cannot decode audio {name}: {err}") from err
        return torch.from_numpy(data.T.copy()), int(rate)

    @staticmethod
    def _to_channels_first(source: Any, name: str) -> torch.Tensor:
        if isinstance(source, np.ndarray):
            if np.issubdtype(source.dtype, np.integer):
                scale = float(np.iinfo(source.dtype).max) + 1.0
                source = source.astype(np.float32) / scale
            with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN are refused below
                waveform = torch.from_numpy(np.asarray(source, dtype=np.float32))
        elif isinstance(source, torch.Tensor):
            waveform = source.detach().cpu()
            if not waveform.is_floating_point():
                scale = float(torch.iinfo(waveform.dtype).max) + 1.0
                waveform = waveform.float() / scale
            waveform = waveform.float()
        else:
            raise AudioError(f"unsupported audio input {name}")
        if waveform.ndim == 1:
            return waveform[None]
        if waveform.ndim != 2:
            raise AudioError(
                f"audio {name} must be (S,), (C, S) or (S, C), got {tuple(waveform.shape)}"
            )
        # the channel axis is the short one: (C, S) or (S, C)
        return waveform if waveform.shape[0] <= waveform.shape[1] else waveform.T


class MediaProcessor:
    """Per-sample media sources -> one ``MediaBatch``, with the processors of a model config."""

    def __init__(
        self,
        image: ImageEncoderConfig | None,
        audio: AudioEncoderConfig | None,
        truncate_audio: bool = False,
        recognizer: RecognizerConfig | None = None,
        recognition_cache: dict | None = None,
    ):
        self.image = ImageProcessor(image) if image is not None else None
        self.audio = AudioProcessor(audio, truncate=truncate_audio) if audio is not None else None
        self.recognizer_config = recognizer if image is not None else None
        self.recognition_cache = recognition_cache
        self._recognizer: Recognizer | None = None  # built on first use (a second to load)

    def __call__(
        self,
        images: list[list[Any]],
        audio: list[list[Any]],
        recognitions: list[list[Any]] | None = None,
    ) -> MediaBatch:
        """``images[b]``/``audio[b]``: the sources of sample ``b`` (lists, possibly empty).
        ``recognitions[b]``: for a model that reads them, rows ``(K, 6)`` already known for
        each image of sample ``b`` (None: run the recognizers on it)."""
        for kind, rows, processor in (("images", images, self.image), ("audio", audio, self.audio)):
            if processor is None and any(rows):
                raise InputError(f"this model takes no {kind}")
        sounds = (
            [[self.audio(x) for x in row] for row in audio] if self.audio else [[]] * len(audio)
        )
        if self.image is None:
            return MediaBatch.from_lists([[]] * len(images), sounds)
        if self.recognizer_config is None:
            return MediaBatch.from_lists([[self.image(x) for x in row] for row in images], sounds)
        known = recognitions or [[None] * len(row) for row in images]
        pixels, found = [], []
        for row, row_known in zip(images, known, strict=True):
            decoded = [load_image(x, self.image.max_pixels) for x in row]
            pixels.append([self.image.pixels(x) for x in decoded])
            found.append([self.recognize(x, k) for x, k in zip(decoded, row_known, strict=True)])
        return MediaBatch.from_lists(pixels, sounds, found)

    def recognize(self, image: Image.Image, known: Any = None) -> torch.Tensor:
        """A decoded image -> its recognition rows ``(K, 6)`` (``known`` when given)."""
        if known is None:
            if self._recognizer is None:
                self._recognizer = Recognizer(self.recognizer_config, self.recognition_cache)
            known = self._recognizer(to_rgb_array(image))
        return torch.as_tensor(np.asarray(known, dtype=np.float32)).reshape(-1, 6)
