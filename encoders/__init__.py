"""Modality encoders: images and sounds in, token sequences out. Knows nothing about text.

Every encoder returns ``(tokens, mask)``: tokens ``(B, N, D)`` and a boolean mask ``(B, N)``
that is True where a token is real (audio clips of different lengths pad to the longest).
Pretrained weights load from local files through ``encoders.pretrained``.
"""

from torch import nn

from encoders.audio import AudioEncoder, AudioEncoderConfig
from encoders.image import ImageEncoder, ImageEncoderConfig
from encoders.spectrogram import LogMelSpectrogram, WhisperLogMel
from encoders.whisper import WhisperEncoder


def build_audio_encoder(config: AudioEncoderConfig) -> nn.Module:
    """The audio encoder ``config.kind`` names: ``vit`` (AST-style) or ``whisper``."""
    return WhisperEncoder(config) if config.kind == "whisper" else AudioEncoder(config)


__all__ = [
    "AudioEncoder",
    "AudioEncoderConfig",
    "ImageEncoder",
    "ImageEncoderConfig",
    "LogMelSpectrogram",
    "WhisperEncoder",
    "WhisperLogMel",
    "build_audio_encoder",
]
