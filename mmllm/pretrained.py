"""Assemble a ``MultimodalLM`` from pretrained parts on local disk. Nothing is downloaded.

``build_from_pretrained(lm=..., image=..., audio=...)`` reads a Llama-family LM (Hugging Face
folder or GGUF file), an optional timm ViT (name + weights file) and an optional Whisper folder
(Hugging Face or CTranslate2), builds the ``MMConfig`` they describe, loads each part's weights,
and returns the model with the LM's own tokenizer. Projectors, media embeddings and the gated
cross-attention layers are new (gates at 0: the model starts out exactly as the LM). The result
saves and loads with our usual ``save_pretrained`` / ``from_pretrained``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from encoders.pretrained import (
    WeightsError,
    image_config_from_timm,
    load_timm_weights,
    load_whisper_weights,
    whisper_config,
)
from mmllm.config import MMConfig, ProjectorConfig
from mmllm.errors import CheckpointError
from mmllm.model import MultimodalLM
from mmllm.pretrained_lm import decoder_config_from_hf, load_lm_weights, read_lm
from mmllm.tokenizer import SpecialTokens, Tokenizer


@dataclass(frozen=True)
class PretrainedImage:
    """A timm ViT by name with its weights file (safetensors or tensor-only torch file)."""

    timm_name: str
    weights: str | Path
    image_size: int | None = None


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


def build_from_pretrained(
    lm: str | Path,
    image: PretrainedImage | None = None,
    audio: str | Path | None = None,
    cross_attn_every: int = 1,
    projector: ProjectorConfig | None = None,
    special_tokens: SpecialTokens | None = None,
    max_seq_len: int | None = None,
    max_media_items: int = 8,
) -> tuple[MultimodalLM, Tokenizer]:
    """A ``MultimodalLM`` (eval mode) of pretrained parts, and the LM's tokenizer.

    lm: Hugging Face folder (``config.json``, safetensors, ``tokenizer.json``) or ``.gguf`` file.
    image: timm ViT to encode images; audio: Whisper folder (Hugging Face or CTranslate2).
    Either may be None.
    cross_attn_every: a gated cross-attention in layers 0, k, 2k, ...
    special_tokens: which LM tokens play pad/bos/eos/sep (see ``mmllm.tokenizer``).
    """
    hf_lm = read_lm(lm)
    try:
        config = MMConfig(
            image=image_config_from_timm(image.timm_name, image.image_size) if image else None,
            audio=whisper_config(audio) if audio is not None else None,
            projector=projector or ProjectorConfig(),
            decoder=decoder_config_from_hf(hf_lm.config, cross_attn_every, max_seq_len),
            max_media_items=max_media_items,
        )
        model = MultimodalLM(config)
        if image is not None:
            load_timm_weights(model.image_encoder, image.weights)
        if audio is not None:
            load_whisper_weights(model.audio_encoder, audio)
    except WeightsError as err:
        raise CheckpointError(str(err)) from err
    load_lm_weights(model.decoder, hf_lm)
    tokenizer = load_lm_tokenizer(lm, special_tokens)
    if tokenizer.vocab_size > config.decoder.vocab_size:
        raise CheckpointError(
            f"the tokenizer of {lm} has {tokenizer.vocab_size} tokens, more than the LM's "
            f"vocab_size {config.decoder.vocab_size}"
        )
    return model.eval(), tokenizer
