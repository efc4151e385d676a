"""Assemble a ``MultimodalLM`` from pretrained parts on local disk. Nothing is downloaded.

``build_from_pretrained(lm=..., image=..., audio=...)`` reads a Llama-family LM (Hugging Face folder
or GGUF file), an optional timm ViT (name + weights file), CNN hybrid (CNN name + ImageNet weights
file, ``encoders.hybrid``) or CLIP/SigLIP vision tower (Hugging Face folder, ``encoders.hf_vision``)
and an optional Whisper folder (Hugging Face or CTranslate2), builds the ``MMConfig`` they describe,
loads each part's weights, and returns the model with the LM's own tokenizer. Any part may instead
be one of our own configs, built untrained. Projectors, media embeddings and the gated cross-
attention layers are new (gates at 0: the model starts out exactly as the LM). The result saves
and loads with our usual ``save_checkpoint`` / ``load_model``; by default the pretrained
parts are recorded as references (``config.base``, see ``mmllm.weights.base_weights``), so a
checkpoint stores only the rest.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from encoders import AudioEncoderConfig, ImageEncoderConfig
from encoders.hf_vision import hf_vision_config, load_hf_vision_weights
from encoders.hybrid import hybrid_config, load_cnn_weights
from encoders.pretrained import (
    WeightsError,
    image_config_from_timm,
    load_timm_weights,
    load_whisper_weights,
    whisper_config,
)
from mmllm.config import DecoderConfig, MMConfig, ProjectorConfig
from mmllm.errors import CheckpointError, InputError
from mmllm.model.multimodal import MultimodalLM
from mmllm.tokenizer import SpecialTokens, Tokenizer
from mmllm.weights.base_weights import reference_base as record_base
from mmllm.weights.pretrained_lm import decoder_config_from_hf, load_lm_weights, read_lm


@dataclass(frozen=True)
class PretrainedImage:
    """A timm ViT by name with its weights file (safetensors or tensor-only torch file)."""

    timm_name: str
    weights: str | Path
    image_size: int | None = None


@dataclass(frozen=True)
class PretrainedCNN:
    """A CNN hybrid (``encoders.hybrid``): ``cnn`` (``mobilenet_v2``, ``efficientnet_lite0``)
    with its ImageNet weights file, and the size of the new transformer on top of it."""

    cnn: str
    weights: str | Path
    image_size: int = 224
    dim: int = 384
    n_layers: int = 2
    n_heads: int = 6
    stride: int = 32  # the feature map read: the final one (32) or the stride-16 stage

    def config(self) -> ImageEncoderConfig:
        return hybrid_config(
            self.cnn, self.image_size, self.dim, self.n_layers, self.n_heads, self.stride
        )


def load_lm_tokenizer(path: str | Path, special: SpecialTokens | None = None) -> Tokenizer:
    """The tokenizer of the LM at ``path``: ``tokenizer.json`` of a folder, or the vocabulary
    inside a GGUF file (through transformers). ``special`` maps our four roles onto its tokens;
    without it the tokenizer must have our own ``<pad> <bos> <eos> <sep>``."""
    path = Path(path)
    if path.suffix != ".gguf":
        return Tokenizer.load(path / "tokenizer.json", special)
    from transformers import AutoTokenizer  # heavy: only for this path

    try:
        hf = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    except (OSError, ValueError, ImportError) as err:
        raise CheckpointError(f"cannot read the tokenizer of {path}: {err}") from err
    backend: HFTokenizer = hf.backend_tokenizer
    return Tokenizer(backend, special)


def own_roles(path: str | Path) -> SpecialTokens:
    """The roles an LM folder's own config gives its tokens: begin and end (``bos_token_id``,
    ``eos_token_id``, which may be one token, as GPT-2's), padding (``pad_token_id``, else the
    end token), no prompt end. ``CheckpointError`` where the config names no end token."""
    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_text())
        backend = HFTokenizer.from_file(str(path / "tokenizer.json"))
    except Exception as err:  # OSError, bad JSON; tokenizers raises a bare Exception
        raise CheckpointError(f"cannot read the LM's own special tokens in {path}: {err}") from err
    ids = (config.get(f"{role}_token_id") for role in ("bos", "eos", "pad"))
    return SpecialTokens.of_ids(backend, *ids, source=str(path))


def has_chat_template(path: str | Path) -> bool:
    """Whether the LM at ``path`` (GGUF file or Hugging Face folder) comes with a chat template,
    i.e. is instruction-tuned to read prompts as chat turns."""
    path = Path(path)
    if path.suffix == ".gguf":
        from gguf import GGUFReader  # memory-maps the file: cheap

        return "tokenizer.chat_template" in GGUFReader(path).fields
    config = path / "tokenizer_config.json"
    if (path / "chat_template.jinja").is_file():
        return True
    try:
        return config.is_file() and "chat_template" in json.loads(config.read_text())
    except ValueError:
        return False


def _image_config(
    image: PretrainedImage | PretrainedCNN | str | Path | ImageEncoderConfig | None,
) -> ImageEncoderConfig | None:
    if isinstance(image, PretrainedImage):
        return image_config_from_timm(image.timm_name, image.image_size)
    if isinstance(image, (str, Path)):
        return hf_vision_config(image)
    return image.config() if isinstance(image, PretrainedCNN) else image


def whisper_window(config: AudioEncoderConfig, seconds: float) -> AudioEncoderConfig:
    """``config`` encoding a window of ``seconds`` (clips cut to it) instead of its own."""
    if config.kind != "whisper":
        raise InputError("an audio window only applies to a Whisper encoder")
    positions = math.ceil(seconds * config.sample_rate / (2 * config.hop_length))
    if not 0 < positions <= config.n_positions:
        longest = config.n_positions * 2 * config.hop_length / config.sample_rate
        raise InputError(f"audio window {seconds:g} s is outside this Whisper's 0-{longest:g} s")
    return dataclasses.replace(config, window_positions=positions, max_seconds=seconds)


def build_from_pretrained(
    lm: str | Path | DecoderConfig,
    image: PretrainedImage | PretrainedCNN | str | Path | ImageEncoderConfig | None = None,
    audio: str | Path | AudioEncoderConfig | None = None,
    cross_attn_every: int = 1,
    projector: ProjectorConfig | None = None,
    special_tokens: SpecialTokens | None = None,
    max_seq_len: int | None = None,
    max_media_items: int = 8,
    reference_base: bool = True,
    audio_seconds: float | None = None,
    gate_init: float = 0.0,
) -> tuple[MultimodalLM, Tokenizer | None]:
    """A ``MultimodalLM`` (eval mode) of pretrained parts, and the LM's tokenizer.

    lm: Hugging Face folder (``config.json``, safetensors, ``tokenizer.json``) or ``.gguf`` file;
    or a ``DecoderConfig``: an untrained decoder, and no tokenizer (None is returned for it).
    image: timm ViT or CNN hybrid to encode images, a Hugging Face CLIP/SigLIP folder, or an
    ``ImageEncoderConfig`` (untrained).
    audio: Whisper folder (Hugging Face or CTranslate2), or an ``AudioEncoderConfig``
    (untrained). Either may be None: no such modality.
    audio_seconds: a Whisper encoder's window (default: its own 30 s); clips are cut to it.
    cross_attn_every: a gated cross-attention in layers 0, k, 2k, ...
    gate_init: the gates' starting value (0: with no media trained yet, exactly the LM).
    special_tokens: which LM tokens play pad/bos/eos/sep (see ``mmllm.tokenizer``).
    reference_base: record the pretrained parts in ``config.base``, so checkpoints of the
    model store only the other tensors; False: checkpoints hold everything.
    """
    hf_lm = None if isinstance(lm, DecoderConfig) else read_lm(lm)
    if hf_lm is not None:
        decoder = decoder_config_from_hf(hf_lm.config, cross_attn_every, max_seq_len)
    else:
        context = min(lm.max_seq_len, max_seq_len) if max_seq_len else lm.max_seq_len
        decoder = dataclasses.replace(lm, cross_attn_every=cross_attn_every, max_seq_len=context)
    decoder = dataclasses.replace(decoder, gate_init=gate_init)
    sources: dict[str, str | Path] = {}
    try:
        audio_config = whisper_config(audio) if isinstance(audio, (str, Path)) else audio
        if audio_seconds is not None and audio_config is not None:
            audio_config = whisper_window(audio_config, audio_seconds)
        config = MMConfig(
            image=_image_config(image),
            audio=audio_config,
            projector=projector or ProjectorConfig(),
            decoder=decoder,
            max_media_items=max_media_items,
        )
        model = MultimodalLM(config)
        if isinstance(image, PretrainedImage):
            load_timm_weights(model.image_encoder, image.weights)
        elif isinstance(image, PretrainedCNN):
            load_cnn_weights(model.image_encoder, image.weights)
        elif isinstance(image, (str, Path)):
            load_hf_vision_weights(model.image_encoder, image)
        if isinstance(image, (PretrainedImage, PretrainedCNN)):
            sources["image"] = image.weights
        elif isinstance(image, (str, Path)):
            sources["image"] = image
        if isinstance(audio, (str, Path)):
            load_whisper_weights(model.audio_encoder, audio)
            sources["audio"] = audio
    except WeightsError as err:
        raise CheckpointError(str(err)) from err
    tokenizer = None
    if hf_lm is not None:
        assert not isinstance(lm, DecoderConfig)
        load_lm_weights(model.decoder, hf_lm)
        sources["lm"] = lm
        tokenizer = load_lm_tokenizer(lm, special_tokens)
        if tokenizer.vocab_size > config.decoder.vocab_size:
            raise CheckpointError(
                f"the tokenizer of {lm} has {tokenizer.vocab_size} tokens, more than the LM's "
                f"vocab_size {config.decoder.vocab_size}"
            )
    if reference_base and sources:
        record_base(model, sources)
    return model.eval(), tokenizer
