"""Pretrained encoder weights from local files: timm ViTs and Whisper's encoder. Never downloads.

Every loader is strict: a tensor the encoder needs that the file lacks, one the file has that
fits nowhere, or a shape that differs raises ``WeightsError`` naming them. Parts of a checkpoint
that belong to something we do not build (a classifier or pooling head, Whisper's text decoder)
are dropped by an explicit rule, never by ignoring leftovers. Whisper's names map onto ours by an
explicit key table; timm files are already in the layout of the timm model we build. A Whisper
folder is a Hugging Face one (``config.json`` + safetensors) or a CTranslate2 one (``model.bin``,
see ``encoders.ctranslate2``).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from encoders.audio import AudioEncoderConfig
from encoders.ctranslate2 import (
    CTranslate2Error,
    ctranslate2_whisper_config,
    ctranslate2_whisper_state,
    read_ctranslate2,
    spec_name,
)
from encoders.image import ImageEncoder, ImageEncoderConfig
from encoders.whisper import WhisperEncoder

# timm checkpoint parts outside forward_features: classifier head, MAP attention pooling
TIMM_DROPPED = ("head.", "attn_pool.")
# Whisper checkpoint parts that are the text decoder, not the encoder
WHISPER_DROPPED = ("model.decoder.", "decoder.", "proj_out.")
WHISPER_LAYER_PARAMS = (
    "self_attn_layer_norm.weight",
    "self_attn_layer_norm.bias",
    "self_attn.q_proj.weight",
    "self_attn.q_proj.bias",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.v_proj.bias",
    "self_attn.out_proj.weight",
    "self_attn.out_proj.bias",
    "final_layer_norm.weight",
    "final_layer_norm.bias",
    "fc1.weight",
    "fc1.bias",
    "fc2.weight",
    "fc2.bias",
)


class WeightsError(Exception):
    """A weights file is missing, unreadable, or does not match the module it is loaded into."""


# -- files -----------------------------------------------------------------------------------
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a tensor-only torch file (``weights_only``)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, SafetensorError, RuntimeError, pickle.UnpicklingError) as err:
        raise WeightsError(f"cannot read weights {path}: {err}") from err
    if isinstance(state, dict) and len(state) == 1 and next(iter(state)) in ("state_dict", "model"):
        state = next(iter(state.values()))  # the usual training-script wrapper
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} is not a state dict of tensors")
    return state


def read_hf_config(folder: str | Path) -> dict:
    """A Hugging Face folder's ``config.json`` as a dict."""
    file = Path(folder) / "config.json"
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"cannot read {file}: {err}") from err


def read_hf_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a Hugging Face folder: ``model.safetensors`` or its sharded index."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, json.JSONDecodeError, KeyError) as err:
            raise WeightsError(f"cannot read {index}: {err}") from err
        return {k: v for shard in shards for k, v in read_state_dict(folder / shard).items()}
    if not (folder / "model.safetensors").is_file():
        raise WeightsError(f"{folder} has no model.safetensors (nor a sharded index)")
    return read_state_dict(folder / "model.safetensors")


# -- checks ----------------------------------------------------------------------------------
def _listing(title: str, names: list[str]) -> str:
    more = f" (+{len(names) - 10} more)" if len(names) > 10 else ""
    return f"{len(names)} {title}: {', '.join(names[:10])}{more}"


def map_keys(
    state: dict[str, torch.Tensor],
    table: dict[str, str],
    dropped: tuple[str, ...],
    source: str,
) -> dict[str, torch.Tensor]:
    """Rename ``state`` by ``table`` (file name -> our name); keys starting with a ``dropped``
    prefix are left out. Any table key absent, or other key left over, raises ``WeightsError``."""
    missing = sorted(k for k in table if k not in state)
    leftover = sorted(k for k in state if k not in table and not k.startswith(dropped))
    problems = [_listing(t, n) for t, n in (("missing", missing), ("unexpected", leftover)) if n]
    if problems:
        raise WeightsError(f"{source}: " + "; ".join(problems))
    return {ours: state[theirs] for theirs, ours in table.items()}


def check_shapes(
    expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str
) -> None:
    """Raise ``WeightsError`` naming every tensor missing from, extra in, or mis-shaped in
    ``state`` compared with a module's ``expected`` state dict."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    titles = ("missing", "unexpected", "mis-shaped")
    problems = [
        _listing(t, n) for t, n in zip(titles, (missing, unexpected, misshaped), strict=True) if n
    ]
    if problems:
        raise WeightsError(f"{source} does not fit the model: " + "; ".join(problems))


# -- timm ViT --------------------------------------------------------------------------------
def image_config_from_timm(
    timm_name: str,
    image_size: int | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
) -> ImageEncoderConfig:
    """The ``ImageEncoderConfig`` of timm ViT ``timm_name`` (sizes and pixel normalisation from
    timm's registry); ``image_size`` defaults to the model's pretraining size."""
    size = {"img_size": image_size} if image_size else {}
    try:
        with torch.device("meta"):  # sizes only: no memory, no init cost
            vit = timm.create_model(
                timm_name, pretrained=False, num_classes=0, global_pool="", **size
            )
    except (RuntimeError, TypeError) as err:  # timm: "Unknown model (...)", bad kwargs
        raise WeightsError(f"timm has no model {timm_name!r}: {err}") from err
    if not isinstance(vit, VisionTransformer):
        raise WeightsError(f"timm model {timm_name!r} is a {type(vit).__name__}, not a ViT")
    fc1 = getattr(vit.blocks[0].mlp, "fc1", None)  # absent in some gated MLP variants
    pretrained = vit.pretrained_cfg
    return ImageEncoderConfig(
        image_size=image_size or pretrained["input_size"][-1],
        patch_size=vit.patch_embed.patch_size[0],
        dim=vit.embed_dim,
        n_layers=len(vit.blocks),
        n_heads=vit.blocks[0].attn.num_heads,
        mlp_ratio=fc1.out_features / vit.embed_dim if fc1 is not None else 4.0,
        mean=tuple(mean or pretrained.get("mean", (0.5, 0.5, 0.5))),
        std=tuple(std or pretrained.get("std", (0.5, 0.5, 0.5))),
        timm_name=timm_name,
    )


def load_timm_weights(encoder: ImageEncoder, weights: str | Path) -> None:
    """Load a timm-layout state dict (safetensors or tensor-only torch file) into ``encoder``.

    Position embeddings trained for another image size are resampled to the encoder's grid the
    way timm resamples them for dynamic sizes.
    """
    vit = encoder.vit
    state = {k: v for k, v in read_state_dict(weights).items() if not k.startswith(TIMM_DROPPED)}
    pos = state.get("pos_embed")
    if pos is not None and vit.pos_embed is not None and pos.shape != vit.pos_embed.shape:
        prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
        state["pos_embed"] = resample_abs_pos_embed(
            pos, new_size=vit.patch_embed.grid_size, num_prefix_tokens=prefix
        )
    check_shapes(vit.state_dict(), state, f"{weights} (timm {encoder.config.timm_name})")
    vit.load_state_dict(state, strict=True)


def load_image_encoder(
    timm_name: str, weights: str | Path, image_size: int | None = None
) -> ImageEncoder:
    """A timm ViT ``ImageEncoder`` with the weights in file ``weights``."""
    encoder = ImageEncoder(image_config_from_timm(timm_name, image_size))
    load_timm_weights(encoder, weights)
    return encoder.eval()


# -- Whisper ---------------------------------------------------------------------------------
def _ctranslate2_whisper(folder: str | Path) -> dict[str, torch.Tensor] | None:
    """The variables of a CTranslate2 Whisper folder, or None for a Hugging Face folder."""
    file = Path(folder) / "model.bin"
    if not file.is_file() or spec_name(file) != "WhisperSpec":
        return None
    try:
        return read_ctranslate2(file)
    except (OSError, CTranslate2Error) as err:
        raise WeightsError(f"cannot read {file}: {err}") from err


def whisper_config(folder: str | Path, max_seconds: float | None = None) -> AudioEncoderConfig:
    """The ``AudioEncoderConfig`` of the Whisper model in folder ``folder``."""
    variables = _ctranslate2_whisper(folder)
    if variables is not None:
        try:
            return ctranslate2_whisper_config(variables, max_seconds)
        except KeyError as err:
            raise WeightsError(f"{folder}: the CTranslate2 Whisper model lacks {err}") from err
    cfg = read_hf_config(folder)
    if cfg.get("model_type") != "whisper":
        raise WeightsError(f"{folder} holds a {cfg.get('model_type')!r} model, not Whisper")
    if cfg.get("activation_function", "gelu") != "gelu":
        raise WeightsError(f"{folder}: activation {cfg['activation_function']!r} is not gelu")
    features = {"sampling_rate": 16000, "n_fft": 400, "hop_length": 160}
    extractor = Path(folder) / "preprocessor_config.json"
    if extractor.is_file():
        saved = json.loads(extractor.read_text())
        features.update({k: saved[k] for k in features if k in saved})
    positions = cfg["max_source_positions"]
    window = 2 * positions * features["hop_length"] / features["sampling_rate"]
    return AudioEncoderConfig(
        kind="whisper",
        sample_rate=features["sampling_rate"],
        n_fft=features["n_fft"],
        hop_length=features["hop_length"],
        n_mels=cfg["num_mel_bins"],
        dim=cfg["d_model"],
        n_layers=cfg["encoder_layers"],
        n_heads=cfg["encoder_attention_heads"],
        mlp_ratio=cfg["encoder_ffn_dim"] / cfg["d_model"],
        max_seconds=min(max_seconds or window, window),
        n_positions=positions,
    )


def whisper_key_table(config: AudioEncoderConfig, prefix: str) -> dict[str, str]:
    """Hugging Face Whisper encoder name (under ``prefix``) -> our ``WhisperEncoder`` name."""
    table = {
        f"{prefix}{name}": name
        for name in (
            "conv1.weight",
            "conv1.bias",
            "conv2.weight",
            "conv2.bias",
            "layer_norm.weight",
            "layer_norm.bias",
        )
    }
    table[f"{prefix}embed_positions.weight"] = "embed_positions"
    for i in range(config.n_layers):
        for name in WHISPER_LAYER_PARAMS:
            table[f"{prefix}layers.{i}.{name}"] = f"layers.{i}.{name}"
    return table


def whisper_state_dict(folder: str | Path, config: AudioEncoderConfig) -> dict[str, torch.Tensor]:
    """Our ``WhisperEncoder``'s tensors from the encoder half of a Hugging Face
    ``WhisperModel`` / ``WhisperForConditionalGeneration`` folder or a CTranslate2 one."""
    variables = _ctranslate2_whisper(folder)
    if variables is not None:
        try:
            return ctranslate2_whisper_state(variables, config)
        except CTranslate2Error as err:
            raise WeightsError(f"{folder}: {err}") from err
    state = read_hf_weights(folder)
    prefixes = [p for p in ("model.encoder.", "encoder.") if f"{p}conv1.weight" in state]
    if not prefixes:
        raise WeightsError(f"{folder}: no Whisper encoder weights (model.encoder.* or encoder.*)")
    return map_keys(state, whisper_key_table(config, prefixes[0]), WHISPER_DROPPED, str(folder))


def load_whisper_weights(encoder: WhisperEncoder, folder: str | Path) -> None:
    """Load the Whisper encoder weights of ``folder`` (Hugging Face or CTranslate2)."""
    state = whisper_state_dict(folder, encoder.config)
    check_shapes(encoder.state_dict(), state, str(folder))
    encoder.load_state_dict(state, strict=True)


def load_whisper_encoder(folder: str | Path, max_seconds: float | None = None) -> WhisperEncoder:
    """Whisper's encoder with the weights of ``folder`` (Hugging Face or CTranslate2)."""
    encoder = WhisperEncoder(whisper_config(folder, max_seconds))
    load_whisper_weights(encoder, folder)
    return encoder.eval()
