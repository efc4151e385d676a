"""Nested, frozen configuration: ``MMConfig(image=..., audio=..., projector=..., decoder=...)``.

Written as ``config.json`` beside the weights and read back exactly; unknown or missing keys are
an error, never silently ignored. The format version guards against reading a future layout.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from encoders import AudioEncoderConfig, ImageEncoderConfig
from encoders.recognizers import RecognizerConfig
from mmllm.errors import ConfigError, InputError

FORMAT_VERSION = 1


PROJECTORS = ("mlp", "resampler", "linear", "identity")


@dataclass(frozen=True)
class ProjectorConfig:
    """Encoder tokens -> shared space. ``mlp``: one token per encoder token; ``resampler``:
    a perceiver that compresses each item to ``n_latents`` tokens; ``linear`` (one product)
    and ``identity`` (the encoder's tokens as they are): imported encoder-decoder models.

    ``image_positions``: a learned embedding per image token position is added to the projected
    image tokens, so every token says where in the picture it is (``mlp`` projector only).
    ``fixed_image_positions``: a fixed 2-D sin-cos table (values in [-1, 1]) times this scale is
    added to the projected image tokens (0: none; ``mlp`` projector only). A position added
    before the projector reaches cross-attention mixed with what the token shows; added here,
    every value cross-attention reads carries it as a separate linear part.
    ``null_tokens``: learned media tokens appended to the media of every sample that has any:
    something to attend to when nothing in the media matches the question ("is there a ...?").
    ``media_embeddings``: a learned modality and slot embedding is added to each item's
    tokens, so the decoder can tell images from sounds and one item from the next (False for
    an imported model, whose decoder reads its encoder's tokens as they are).
    """

    kind: str = "mlp"
    n_latents: int = 16
    n_layers: int = 2
    n_heads: int = 4
    image_positions: bool = False
    fixed_image_positions: float = 0.0
    null_tokens: int = 0
    media_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.kind not in PROJECTORS:
            raise ConfigError(f"projector kind must be one of {PROJECTORS}, got {self.kind!r}")
        if self.image_positions and self.kind != "mlp":
            raise ConfigError("image_positions needs the 'mlp' projector (one token per patch)")
        if not self.fixed_image_positions >= 0:
            raise ConfigError(
                f"fixed_image_positions must be >= 0, got {self.fixed_image_positions}"
            )
        if self.fixed_image_positions and self.kind != "mlp":
            raise ConfigError(
                "fixed_image_positions needs the 'mlp' projector (one token per patch)"
            )
        if self.null_tokens < 0:
            raise ConfigError(f"null_tokens must be >= 0, got {self.null_tokens}")


@dataclass(frozen=True)
class RopeScaling:
    """Context extension of rotary positions (Hugging Face's ``rope_scaling``).

    ``linear``: every frequency divided by ``factor`` (position interpolation, Chen et al., 2023).
    ``llama3``: Llama 3.1's rule: wavelengths longer than ``original_max_seq_len /
    low_freq_factor`` are divided by ``factor``, shorter than ``original_max_seq_len /
    high_freq_factor`` kept, and the band between blended smoothly.
    """

    kind: str = "linear"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_seq_len: int = 8192

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "llama3"):
            raise ConfigError(f"rope scaling kind must be 'linear' or 'llama3', got {self.kind!r}")
        if not self.factor > 0:
            raise ConfigError(f"rope scaling factor must be > 0, got {self.factor!r}")
        if self.kind == "llama3" and not self.high_freq_factor > self.low_freq_factor:
            raise ConfigError(
                f"llama3 rope scaling needs high_freq_factor ({self.high_freq_factor}) > "
                f"low_freq_factor ({self.low_freq_factor})"
            )


NORMS = ("rms", "layer")
POSITIONS = ("rope", "learned")
MLPS = ("swiglu", "gelu", "gelu_tanh")


@dataclass(frozen=True)
class DecoderConfig:
    """A decoder with cross-attention in every ``cross_attn_every``-th block (or at
    ``cross_attn_layers``). By default Llama's block: pre-RMSNorm, rotary positions, SwiGLU, no
    biases, tanh-gated cross-attention. The block family (for imported models, e.g. GPT-2):
    ``norm`` ``"layer"`` (LayerNorm with bias), ``positions`` ``"learned"`` (an absolute
    position table added to the token embeddings), ``mlp`` ``"gelu"`` / ``"gelu_tanh"`` (one
    hidden layer), ``linear_bias`` (every attention and MLP product has a bias),
    ``cross_attn_gated=False`` (cross-attention added as it is, no gate), ``post_norm``
    (BERT's order: each sub-layer's residual sum is normed, the embeddings are normed, no final
    norm), ``head_transform`` (BERT's dense + GELU + LayerNorm before a head with a bias) and
    ``media_dim`` (the width of the media tokens cross-attention reads, when not ``dim``).
    Llama 3.2 Vision's layers: ``cross_attn_only`` (a cross-attention layer has no
    self-attention, its attention and MLP are each tanh-gated, and it is skipped without media),
    ``image_token_id`` (text before that token does not use those layers' MLP) and
    ``head_vocab_size`` (a head over fewer tokens than the embeddings hold). ``causal=False``:
    every token sees every other, as in a BERT encoder (BLIP's question encoder)."""

    vocab_size: int = 1024
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    hidden_dim: int = 688
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    cross_attn_every: int = 1
    gate_init: float = 0.0  # 0 keeps a pretrained LM exactly itself; from scratch, open them
    train_gates: bool = True  # False: gates stay at gate_init (a from-scratch model cannot
    # then shut the media pathway while its encoders are still learning)
    cross_attn_qk_norm: bool = False  # RMS-normalise cross-attention queries and keys per head
    # (learned gains): attention follows the direction of what is asked, not the keys' norms
    tie_embeddings: bool = True
    attn_bias: bool = False
    head_dim: int | None = None
    rope_scaling: RopeScaling | None = None
    norm: str = "rms"
    positions: str = "rope"
    mlp: str = "swiglu"
    linear_bias: bool = False
    cross_attn_gated: bool = True
    cross_attn_layers: tuple[int, ...] | None = None  # None: every cross_attn_every-th
    post_norm: bool = False
    head_transform: bool = False
    media_dim: int | None = None
    cross_attn_only: bool = False
    image_token_id: int | None = None
    head_vocab_size: int | None = None
    causal: bool = True

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("norm", self.norm, NORMS),
            ("positions", self.positions, POSITIONS),
            ("mlp", self.mlp, MLPS),
        ):
            if value not in allowed:
                raise ConfigError(f"decoder {name} must be one of {allowed}, got {value!r}")
        if self.cross_attn_layers is not None and any(
            not 0 <= i < self.n_layers for i in self.cross_attn_layers
        ):
            raise ConfigError(
                f"cross_attn_layers {list(self.cross_attn_layers)} must index the "
                f"{self.n_layers} layers"
            )
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )
        if self.head_dim is None and self.dim % self.n_heads:
            raise ConfigError(f"dim ({self.dim}) must be a multiple of n_heads ({self.n_heads})")
        if self.cross_attn_every < 1:
            raise ConfigError(f"cross_attn_every must be >= 1, got {self.cross_attn_every}")

    @property
    def attn_head_dim(self) -> int:
        return self.head_dim or self.dim // self.n_heads

    def has_cross_attn(self, layer: int) -> bool:
        """Whether ``layer`` carries a cross-attention to the media: those of
        ``cross_attn_layers``, else layers 0, k, 2k, ... (k: ``cross_attn_every``)."""
        if self.cross_attn_layers is not None:
            return layer in self.cross_attn_layers
        return layer % self.cross_attn_every == 0

    @property
    def is_llama_block(self) -> bool:
        """The default block (what the packed and compiled decode steps are written for)."""
        plain = not (
            self.linear_bias
            or self.post_norm
            or self.head_transform
            or self.cross_attn_only
            or self.image_token_id is not None
            or self.head_vocab_size is not None
            or not self.causal
        )
        return (
            (self.norm, self.positions, self.mlp) == ("rms", "rope", "swiglu")
            and plain
            and self.cross_attn_gated
            and self.media_dim in (None, self.dim)
        )


# the language model's linear layers LoRA may adapt, and the sub-module of a block holding each
LORA_TARGETS = {
    "q_proj": "self_attn",
    "k_proj": "self_attn",
    "v_proj": "self_attn",
    "o_proj": "self_attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}


@dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adapters (Hu et al., 2021) on the language model's ``targets`` in every block:
    ``W x + (alpha / rank) B A x`` with ``B`` starting at 0 (see ``mmllm.model.lora``)."""

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"LoRA rank must be >= 1, got {self.rank}")
        unknown = [t for t in self.targets if t not in LORA_TARGETS]
        if unknown or not self.targets:
            raise ConfigError(
                f"LoRA targets {list(self.targets)} must be a non-empty subset of "
                f"{list(LORA_TARGETS)}"
            )


@dataclass(frozen=True)
class WeightsRef:
    """Where one pretrained part's weights are read from: ``path`` (a file or folder; relative
    to the checkpoint folder unless absolute), or ``file`` inside the installed Python package
    ``package``. ``install`` is the command that installs that package; ``sha256`` fingerprints
    the part's tensors as loaded, so another file under the same name is caught."""

    path: str | None = None
    package: str | None = None
    file: str | None = None
    install: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.package is None):
            raise ConfigError("a base weights reference needs exactly one of 'path' and 'package'")
        if self.package is not None and not self.file:
            raise ConfigError(f"a base weights reference to package {self.package!r} needs 'file'")

    def describe(self) -> str:
        return self.path if self.path is not None else f"{self.file} in package {self.package}"


@dataclass(frozen=True)
class BaseWeights:
    """Pretrained parts a checkpoint does not store: each is rebuilt from its reference when
    the checkpoint loads (``mmllm.weights.base_weights``); ``model.safetensors`` holds the rest."""

    lm: WeightsRef | None = None
    image: WeightsRef | None = None
    audio: WeightsRef | None = None

    def parts(self) -> dict[str, WeightsRef]:
        """``{part: reference}`` for the parts that are referenced."""
        refs = {"lm": self.lm, "image": self.image, "audio": self.audio}
        return {part: ref for part, ref in refs.items() if ref is not None}


@dataclass(frozen=True)
class MMConfig:
    """The whole model. ``image``/``audio`` are None for a model without that modality.

    ``lora``: adapters on the language model (None: none). ``base``: pretrained parts stored
    by reference rather than in ``model.safetensors`` (None: the checkpoint holds everything).
    ``recognizer``: the real recognizers (ImageNet classifier, COCO detector) whose findings
    join each image's tokens (None: the model reads pixels only). ``question_encoder``: a text
    encoder that reads a question with the media; the decoder then reads its states instead of
    the media (BLIP's VQA; None: the decoder reads the media).
    """

    image: ImageEncoderConfig | None = field(default_factory=ImageEncoderConfig)
    audio: AudioEncoderConfig | None = field(default_factory=AudioEncoderConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    max_media_items: int = 8
    lora: LoRAConfig | None = None
    base: BaseWeights | None = None
    recognizer: RecognizerConfig | None = None
    question_encoder: DecoderConfig | None = None
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MMConfig:
        version = data.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ConfigError(
                f"config format_version {version} is newer than this mmllm understands "
                f"({FORMAT_VERSION}); upgrade mmllm"
            )
        return _build(cls, data, "config")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> MMConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read config {path}: {err}") from err
        return cls.from_dict(data)


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from ``data``, strictly: unknown keys and bad types raise."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err


def _convert(hint: Any, value: Any, where: str) -> Any:
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{where}: must not be null")
    inner = [a for a in args if a is not type(None)]
    if dataclasses.is_dataclass(hint) or (inner and dataclasses.is_dataclass(inner[0])):
        return _build(hint if dataclasses.is_dataclass(hint) else inner[0], value, where)
    if typing.get_origin(hint) is tuple or (inner and typing.get_origin(inner[0]) is tuple):
        return tuple(value)
    return value


def with_position_tables(
    config: MMConfig, image_fixed: float | None = None, projected: float | None = None
) -> MMConfig:
    """``config`` with fixed sin-cos position tables (they add no weights, so a trained model
    built from the new config loads its old weights): ``image_fixed`` on a CNN hybrid's cells
    (``ImageEncoderConfig.fixed_positions``), ``projected`` on the projected image tokens
    (``ProjectorConfig.fixed_image_positions``); None leaves a table as it is."""
    if image_fixed is not None:
        if config.image is None or config.image.kind != "cnn_hybrid":
            kind = config.image.kind if config.image else None
            raise InputError(
                f"fixed image positions need a CNN-hybrid image encoder; this has {kind}"
            )
        image = _checked_replace(config.image, fixed_positions=image_fixed)
        config = dataclasses.replace(config, image=image)
    if projected is not None:
        if config.image is None or config.projector.kind != "mlp":
            raise InputError(
                "projected image positions need an image encoder and the 'mlp' projector; this "
                f"model has {config.image and config.image.kind}, {config.projector.kind!r}"
            )
        projector = _checked_replace(config.projector, fixed_image_positions=projected)
        config = dataclasses.replace(config, projector=projector)
    return config


def _checked_replace(part: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` whose rejected values (the config's own checks) are the user's
    input errors."""
    try:
        return dataclasses.replace(part, **changes)
    except ValueError as error:
        raise InputError(str(error)) from error
