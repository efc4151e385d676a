"""Modality encoders: images and sounds in, token sequences out. Knows nothing about text.

Every encoder returns ``(tokens, mask)``: tokens ``(B, N, D)`` and a boolean mask ``(B, N)``
that is True where a token is real (audio clips of different lengths pad to the longest).
Pretrained weights load from local files through ``encoders.pretrained``.
"""

from torch import nn

from encoders.audio import AudioEncoder, AudioEncoderConfig
from encoders.hf_vision import HFVisionEncoder
from encoders.hybrid import HybridImageEncoder
from encoders.image import ImageEncoder, ImageEncoderConfig
from encoders.spectrogram import LogMelSpectrogram, WhisperLogMel
from encoders.whisper import WhisperEncoder


def build_image_encoder(config: ImageEncoderConfig) -> nn.Module:
    """The image encoder ``config.kind`` names: ``vit`` (timm ViT), ``cnn_hybrid`` or
    ``hf_vision`` (a Hugging Face CLIP/SigLIP tower)."""
    kinds = {"vit": ImageEncoder, "cnn_hybrid": HybridImageEncoder, "hf_vision": HFVisionEncoder}
    return kinds[config.kind](config)


def build_audio_encoder(config: AudioEncoderConfig) -> nn.Module:
    """The audio encoder ``config.kind`` names: ``vit`` (AST-style) or ``whisper``."""
    return WhisperEncoder(config) if config.kind == "whisper" else AudioEncoder(config)


__all__ = [
    "AudioEncoder",
    "AudioEncoderConfig",
    "HFVisionEncoder",
    "HybridImageEncoder",
    "ImageEncoder",
    "ImageEncoderConfig",
    "LogMelSpectrogram",
    "WhisperEncoder",
    "WhisperLogMel",
    "build_audio_encoder",
    "build_image_encoder",
]
