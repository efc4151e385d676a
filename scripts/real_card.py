"""Measure mmllm-real and write its model card, scores.json and training plot.

    python scripts/real_card.py --checkpoint checkpoints/mmllm-real --run runs/real1 \
        --photos data/photos/data.jsonl

Measures, on this machine: the real-photo set (the model and the teacher-label oracle, per
source), the synthetic held-out set, the pinned subsets the shipped test re-checks, text-only
identity with the base LM, and caption latency against mmllm-smol in the same process.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

import mmllm
from mmllm.data.real_photos import export_real_photos
from mmllm.eval.run import evaluate
from mmllm.eval.smol_card import base_lm, text_only_checks

PINNED_SOURCES = ("skimage", "sklearn", "matplotlib")
PINNED_SYNTHETIC = {"data": "synthetic:heldout", "n": 100, "seed": 0}
ROOT = Path(__file__).resolve().parent.parent


def latency(paths: dict[str, str], image: str, rounds: int = 5) -> dict:
    """Median seconds to caption ``image`` (batch 1, greedy, up to 48 tokens, fp32, CPU) for
    each checkpoint, in alternating rounds in one process."""
    models = {name: mmllm.load(path, device="cpu") for name, path in paths.items()}
    for model in models.values():
        model.caption(image)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.caption(image)
            times[name].append(time.perf_counter() - start)
    return {name: {"median_s": statistics.median(t), "times_s": t} for name, t in times.items()} | {
        "threads": torch.get_num_threads()
    }


def pct(scores: dict, key: str) -> str:
    return f"{100 * scores[key]['accuracy']:.1f}%" if key in scores else "n/a"


def photo_table(model: dict, oracle: dict) -> str:
    sources = sorted({k.split("/", 2)[2] for k in model if k.startswith("photo/caption/")})
    lines = [
        "| source | photos | caption names it: model / oracle | questions right: model / oracle |",
        "|---|---|---|---|",
    ]
    for source in [*sources, None]:
        cap = f"photo/caption/{source}" if source else "photo/caption"
        vqa = f"photo/vqa/{source}" if source else "photo/vqa"
        name = source or "**all**"
        lines.append(
            f"| {name} | {model[cap]['n']} | {pct(model, cap)} / {pct(oracle, cap)} "
            f"| {pct(model, vqa)} / {pct(oracle, vqa)} |"
        )
    return "\n".join(lines)


def qtype_table(model: dict, oracle: dict) -> str:
    lines = ["| question | n | model | oracle |", "|---|---|---|---|"]
    for key in sorted(k for k in model if k.startswith("photo/qtype/")):
        q = key.rsplit("/", 1)[1]
        lines.append(f"| {q} | {model[key]['n']} | {pct(model, key)} | {pct(oracle, key)} |")
    return "\n".join(lines)


def failures(model: dict, n: int = 10) -> str:
    from mmllm.data.collate import Record
    from mmllm.eval.photos import accepted

    rows = []
    for item in model["_photo_answers"]:
        record = Record(prompt=item["prompt"], target="", accept=item["accept"])
        record.task = "caption" if item["prompt"] == "describe the image:" else "vqa"
        if not accepted(record, item["prediction"]):
            rows.append(item)
    picked = rows[:: max(1, len(rows) // n)][:n]
    lines = ["| photo | asked | said | acceptable |", "|---|---|---|---|"]
    for item in picked:
        where = item["id"].rsplit(":", 1)[0] if item["id"] else ""
        lines.append(
            f"| {Path(where).name} | {item['prompt']} | {item['prediction']} "
            f"| {', '.join(item['accept'][:4])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "mmllm-real")
    parser.add_argument("--run", type=Path, required=True, help="the training run's folder")
    parser.add_argument("--photos", required=True, help="mmllm data photos' data.jsonl")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None, help="scores JSON (default: beside)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    api = mmllm.load(args.checkpoint, device="cpu")
    model, tokenizer = api.model, api.tokenizer
    scores = {
        "photos": evaluate(model, tokenizer, args.photos, None, progress=True),
        "oracle": evaluate(model, tokenizer, args.photos, None, progress=True, oracle=True),
        "synthetic": evaluate(model, tokenizer, "synthetic:heldout", args.n, progress=True),
    }
    with tempfile.TemporaryDirectory() as tmp:
        subset = export_real_photos(Path(tmp), sources=PINNED_SOURCES, progress=False)
        pinned_photos = evaluate(model, tokenizer, str(subset), None)
    pinned_synthetic = evaluate(model, tokenizer, **PINNED_SYNTHETIC)
    keep = ("image", "audio", "both", "overall")
    scores["pinned"] = {
        "synthetic": {**PINNED_SYNTHETIC, "scores": {k: pinned_synthetic[k] for k in keep}},
        "photos": {
            "sources": list(PINNED_SOURCES),
            "scores": {k: v for k, v in pinned_photos.items() if k.startswith("photo/")},
        },
    }
    scores["text_only"] = text_only_checks(model, tokenizer, base_lm(args.checkpoint))
    image = str(ROOT / "demos" / "examples" / "cat.jpg")
    pair = {"mmllm-real": str(args.checkpoint), "mmllm-smol": "mmllm-smol"}
    scores["latency"] = latency(pair, image)
    scores["size_mb"] = (args.checkpoint / "model.safetensors").stat().st_size / 1e6
    out = args.out or args.checkpoint / "scores.json"
    out.write_text(json.dumps(scores, indent=1) + "\n")
    if (args.run / "metrics.png").is_file():
        shutil.copy(args.run / "metrics.png", args.checkpoint / "metrics.png")
    print(json.dumps({k: scores[k] for k in ("latency", "size_mb")}, indent=1))
    print(photo_table(scores["photos"], scores["oracle"]))
    print(qtype_table(scores["photos"], scores["oracle"]))
    print(failures(scores["photos"]))


if __name__ == "__main__":
    main()
