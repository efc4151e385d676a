"""The ``mmllm`` command: caption, alt-text, ask, train, eval, data."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import typing
from pathlib import Path

from mmllm.errors import MMLLMError

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, skip: set[str]) -> None:
    """One ``--flag`` per dataclass field (``snake_case`` -> ``--snake-case``)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        hint = hints[f.name]
        base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        kind = base[0] if base[0] in (int, float, str) else str
        parser.add_argument(
            "--" + f.name.replace("_", "-"), type=kind, default=None, help=f"(default: {f.default})"
        )


def cmd_train(args: argparse.Namespace) -> int:
    from mmllm.presets import PRESETS
    from mmllm.train.trainer import TrainConfig, train

    values: dict = {}
    if args.config:
        values.update(json.loads(Path(args.config).read_text()))
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = value
    if not values.get("model") and not values.get("init"):
        values["model"] = PRESETS[args.preset].to_dict()
    cfg = TrainConfig(**values)
    folder = train(cfg)
    print(f"checkpoint: {folder}")
    return EXIT_OK


def cmd_data_synth(args: argparse.Namespace) -> int:
    from mmllm.data.synthetic import export_jsonl

    path = export_jsonl(args.out, n=args.n, seed=args.seed, split=args.split)
    print(path)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from mmllm.train.trainer import TrainConfig

    parser = argparse.ArgumentParser(prog="mmllm", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="train or fine-tune a model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  mmllm train --out runs/tiny --steps 10000 --max-minutes 85\n"
        "  mmllm train --init checkpoints/mmllm-tiny --data my.jsonl --out runs/mine\n"
        "  torchrun --nproc_per_node 2 -m mmllm.cli train --out runs/ddp --steps 100",
    )
    train.add_argument("--config", help="JSON file of TrainConfig fields (flags override it)")
    train.add_argument("--preset", default="tiny", help="model size when not --init")
    _add_dataclass_flags(train, TrainConfig, skip={"model"})
    train.set_defaults(func=cmd_train)

    data = sub.add_parser("data", help="export datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    synth = data_sub.add_parser("synth", help="export a synthetic split as JSONL + files")
    synth.add_argument("--out", required=True)
    synth.add_argument("--n", type=int, required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--split", default="train")
    synth.set_defaults(func=cmd_data_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
