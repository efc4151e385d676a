"""mmllm: a small multimodal language model for images and sounds.

Images and audio become tokens in one shared space; a decoder-only language model attends to
them through gated cross-attention.
"""

from mmllm.config import DecoderConfig, MMConfig, ProjectorConfig
from mmllm.errors import (
    AudioError,
    CheckpointError,
    ConfigError,
    DataError,
    GenerationError,
    ImageError,
    InputError,
    MediaLimitError,
    MMLLMError,
    TextError,
)
from mmllm.model.media import MediaBatch
from mmllm.model.multimodal import MultimodalLM
from mmllm.tasks import MMLLM, Answer, ScoredText, load
from mmllm.tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = [
    "MMLLM",
    "Answer",
    "AudioError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DecoderConfig",
    "GenerationError",
    "ImageError",
    "InputError",
    "MMConfig",
    "MMLLMError",
    "MediaBatch",
    "MediaLimitError",
    "MultimodalLM",
    "ProjectorConfig",
    "ScoredText",
    "TextError",
    "Tokenizer",
    "__version__",
    "load",
]
