"""Record, or compare, what every shipped checkpoint does: a refactor must change nothing.

``record`` writes, per checkpoint, its greedy outputs on a JSONL of held-out records and its
logits on a fixed batch (the first ``--batch`` records, prompts left-padded, with their
media). ``compare`` reads two such folders and says whether the outputs are identical and the
logits bitwise equal. Run ``record`` before a change (e.g. from a ``git worktree`` of the old
commit) and after it, then ``compare``:

    mmllm data synth --split test --n 500 --seed 0 --out held
    python -m scripts.behaviour_check record --data held/test.jsonl --out before
    python -m scripts.behaviour_check record --data held/test.jsonl --out after
    python -m scripts.behaviour_check compare before after

It uses only the public loading API (``mmllm.load``) and the batched generation that
evaluation uses, so it runs unchanged across internal moves.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import mmllm
from mmllm.data.jsonl import read_jsonl
from mmllm.eval.predict import predict
from mmllm.generate import left_pad

SHIPPED = ("mmllm-tiny", "mmllm-smol", "mmllm-real")


def fixed_batch_logits(api, records) -> torch.Tensor:
    """Logits ``(B, T, V)`` of ``records``' prompts (left-padded) with their media."""
    tok = api.tokenizer
    token_ids, mask = left_pad([tok.prompt_ids(r.prompt) for r in records], tok.pad_id)
    media = api.media_processor([r.images for r in records], [r.audio for r in records])
    media = media.to(api.device, dtype=api.model.decoder.embed_tokens.weight.dtype)
    with torch.inference_mode():
        out = api.model(token_ids, media, mask)
    return getattr(out, "logits", out).float().contiguous()  # older versions: an LMOutput


def record(data: Path, out: Path, batch: int, checkpoints: list[str]) -> None:
    torch.manual_seed(0)
    records = read_jsonl(data)
    out.mkdir(parents=True, exist_ok=True)
    for name in checkpoints:
        api = mmllm.load(Path("checkpoints") / name, device="cpu", compile=False)
        texts = predict(api.model, api.tokenizer, records, batch_size=32, progress=True)
        (out / f"{name}.json").write_text(json.dumps(texts, indent=0))
        logits = fixed_batch_logits(api, records[:batch])
        save_file({"logits": logits}, out / f"{name}.safetensors")
        print(f"{name}: {len(texts)} outputs, logits {tuple(logits.shape)}")


def compare(before: Path, after: Path) -> bool:
    same = True
    for path in sorted(before.glob("*.json")):
        name = path.stem
        old, new = json.loads(path.read_text()), json.loads((after / path.name).read_text())
        differ = sum(a != b for a, b in zip(old, new, strict=True))
        a = load_file(before / f"{name}.safetensors")["logits"]
        b = load_file(after / f"{name}.safetensors")["logits"]
        bitwise = a.shape == b.shape and torch.equal(a, b)
        gap = float((a - b).abs().max()) if a.shape == b.shape else float("inf")
        print(
            f"{name}: {len(old) - differ}/{len(old)} outputs identical; logits "
            f"{'bitwise equal' if bitwise else f'differ (max abs {gap:.3g})'}"
        )
        same = same and differ == 0 and bitwise
    return same


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="write outputs and logits of each shipped checkpoint")
    rec.add_argument("--data", type=Path, required=True, help="held-out records (JSONL)")
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--batch", type=int, default=8, help="records in the fixed logits batch")
    rec.add_argument("--checkpoints", nargs="+", default=list(SHIPPED))
    cmp = sub.add_parser("compare", help="are two recordings identical?")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.data, args.out, args.batch, args.checkpoints)
        return 0
    return 0 if compare(args.before, args.after) else 1


if __name__ == "__main__":
    sys.exit(main())
