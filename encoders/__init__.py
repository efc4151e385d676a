"""Modality encoders: images and sounds in, token sequences out. Knows nothing about text.

Every encoder returns ``(tokens, mask)``: tokens ``(B, N, D)`` and a boolean mask ``(B, N)``
that is True where a token is real (audio clips of different lengths pad to the longest).
"""

from encoders.audio import AudioEncoder, AudioEncoderConfig
from encoders.image import ImageEncoder, ImageEncoderConfig
from encoders.spectrogram import LogMelSpectrogram

__all__ = [
    "AudioEncoder",
    "AudioEncoderConfig",
    "ImageEncoder",
    "ImageEncoderConfig",
    "LogMelSpectrogram",
]
