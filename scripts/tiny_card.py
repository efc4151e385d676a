"""Measure a trained checkpoint and write its model card (``README.md``) and ``scores.json``.

    python -m scripts.tiny_card --checkpoint checkpoints/mmllm-tiny --run runs/tiny

Measures, with ``mmllm eval``'s code: the held-out split, the held-out paraphrase split, the
held-out split with audio removed and with images removed (proof the model uses each medium),
the majority-answer baselines, and the small fixed sample the test suite pins.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch

from mmllm.data.sources import SyntheticSource
from mmllm.eval.metrics import normalize_answer
from mmllm.eval.run import evaluate, markdown_table
from mmllm.train.image_pretrain import PATCH_GROUPS, PRETRAIN_DIR, REPORT_FILE
from mmllm.train.plot import plot_metrics
from mmllm.train.recipes import stage_dirs
from mmllm.train.stages import STAGE_NOTES
from mmllm.weights.checkpoint import load_model, load_tokenizer

PINNED_N = 300  # records of synthetic:heldout the test suite re-scores (tests/test_shipped.py)
CATEGORIES = ("image", "audio", "both")
_PATCH_NAMES = {"x": "centre x", "y": "centre y"}
HARDWARE = "two threads (both cores, the default), data from one worker process"  # the recipe


def majority_baselines(n_train: int = 20000, n_eval: int = 2000) -> dict:
    """Accuracy of always giving the training split's most common answer for each question type."""
    train, heldout = SyntheticSource("train"), SyntheticSource("heldout")
    answers: dict[str, Counter] = defaultdict(Counter)
    for i in range(n_train):
        r = train[i]
        if r.task == "vqa":
            answers[r.qtype][normalize_answer(r.target)] += 1
    hits: dict[str, list[int]] = defaultdict(list)
    for i in range(n_eval):
        r = heldout[i]
        if r.task == "vqa":
            guess = answers[r.qtype].most_common(1)[0][0] if answers[r.qtype] else ""
            hits[r.category].append(int(guess == normalize_answer(r.target)))
    return {k: sum(v) / len(v) for k, v in hits.items()}


def measure(checkpoint: Path, n: int) -> dict:
    model = load_model(checkpoint).eval()
    tokenizer = load_tokenizer(checkpoint)
    run = {
        "heldout": evaluate(model, tokenizer, "synthetic:heldout", n, progress=True),
        "heldout-paraphrase": evaluate(
            model, tokenizer, "synthetic:heldout-paraphrase", n, progress=True
        ),
        "heldout-no-audio": evaluate(model, tokenizer, "synthetic:heldout", n, drop="audio"),
        "heldout-no-image": evaluate(model, tokenizer, "synthetic:heldout", n, drop="image"),
        "pinned": evaluate(model, tokenizer, "synthetic:heldout", PINNED_N),
        "majority_baseline": majority_baselines(n_eval=n),
    }
    run["parameters"] = sum(p.numel() for p in model.parameters())
    return run


def _pct(scores: dict, key: str) -> str:
    return f"{100 * scores[key]['accuracy']:.1f}%" if key in scores else "n/a"


def architecture(train_config: dict) -> str:
    """One line on the model's shape and training loss, from the run's ``train_config.json``."""
    model = train_config.get("model") or {}
    img, aud, dec, proj = (model.get(k) or {} for k in ("image", "audio", "decoder", "projector"))
    parts = []
    if img:
        parts.append(
            f"image ViT {img['n_layers']} x {img['dim']} ({img.get('stem', 'patch')} stem, "
            f"{img['image_size']} px, patch {img['patch_size']})"
        )
    if aud:
        parts.append(f"audio ViT over log-mel patches {aud['n_layers']} x {aud['dim']}")
    if dec:
        every = dec["cross_attn_every"]
        parts.append(
            f"decoder {dec['n_layers']} x {dec['dim']} with gated cross-attention"
            + (" (QK-norm)" if dec.get("cross_attn_qk_norm") else "")
            + " in "
            + ("every block" if every == 1 else f"every {every} blocks")
        )
    extras = [f"{proj.get('kind', 'mlp')} projectors"]
    if proj.get("image_positions"):
        extras.append("a learned embedding per image token position")
    if proj.get("null_tokens"):
        extras.append(f"{proj['null_tokens']} learned null media tokens")
    loss = "averaged per example" if train_config.get("loss_per_example") else "per token"
    loss_line = f"Loss {loss} (on targets, not prompts)."
    return f"- Model: {'; '.join(parts)}; {', '.join(extras)}. {loss_line}"


def _weak_types(scores: dict, below: float = 0.7) -> list[str]:
    """A sentence naming the question types under ``below`` held-out accuracy (none: nothing)."""
    weak = sorted(
        (v["accuracy"], k.removeprefix("qtype/"))
        for k, v in scores.items()
        if k.startswith("qtype/") and v["accuracy"] < below
    )
    if not weak:
        return []
    named = ", ".join(f"{name} {100 * acc:.1f}%" for acc, name in weak)
    return [
        f"Weakest question types (held-out, under {100 * below:.0f}%): {named}; chance is 50% "
        "for the yes/no types (presence, relation).",
        "",
    ]


def _last(rows: list[dict], key: str) -> float:
    """``key`` of the last training row (those with a loss) of a run's metrics; 0 if none."""
    train_rows = [r for r in rows if "loss" in r]
    return train_rows[-1][key] if train_rows else 0


def training_lines(stages: list[tuple[dict, list[dict]]]) -> list[str]:
    """One card line per training stage (its ``train_config`` and metrics rows): data, steps,
    optimiser and any extra loss; a later stage starts from the one before."""
    lines = []
    for i, (config, metrics) in enumerate(stages):
        steps, batch = int(_last(metrics, "step")), config["batch_size"]
        name = f"Stage {i + 1} of {len(stages)}" if len(stages) > 1 else "Training"
        start = f" (from stage {i}'s checkpoint)" if i else ""
        extras = ""  # the extra losses, if any
        if config.get("patch_weight"):
            extras = (
                f"; plus {config['patch_weight']} x a per-token image loss (`--patch-weight`, "
                "`mmllm.train.aux_losses`): a linear head on each projected image token "
                "predicts what its patch shows, so the tokens cross-attention reads keep "
                "those facts; the head is dropped"
            )
        if config.get("attend_weight"):
            extras += (
                f"; plus {config['attend_weight']} x an attention loss (`--attend-weight`): "
                "at the position predicting the answer, each cross-attention layer's attention "
                "is pulled onto the patches of the shapes a synthetic question names"
            )
        if config.get("stage", "full") != "full":
            extras += f"; `--stage {config['stage']}`: {STAGE_NOTES[config['stage']]}"
        lines.append(
            f"- {name}{start}: `{config.get('data', 'synthetic:train')}`, seed {config['seed']}, "
            f"generated on the fly ({steps} steps x batch {batch} = {steps * batch:,} "
            f"examples); AdamW (betas 0.9/0.95, weight decay {config['weight_decay']}), lr "
            f"{config['lr']} with {config['warmup']} warmup steps and cosine decay to "
            f"{config['min_lr_ratio']}x, gradient clipping {config['grad_clip']}{extras}."
        )
    return lines


def render_card(
    name: str,
    run: dict,
    train_config: dict,
    metrics: list[dict],
    weights_mb: float,
    command: str,
    run_dir: str,
    image_pretrain: dict | None = None,
    hardware: str = HARDWARE,
    earlier_stages: Sequence[tuple[dict, list[dict]]] = (),
) -> str:
    """The model card (Markdown) from the measurements of ``measure`` and the training run
    (``train_config`` and ``metrics``; ``earlier_stages``: the same two of each stage it
    continued from, in order); ``hardware`` says how the CPU was used (threads, other load)."""
    h, p = run["heldout"], run["heldout-paraphrase"]
    no_a, no_i, base = run["heldout-no-audio"], run["heldout-no-image"], run["majority_baseline"]
    stages = [*earlier_stages, (train_config, metrics)]
    wall = sum(_last(rows, "elapsed_s") for _, rows in stages) / 60
    # each training call logs what its loop's clock leaves out (set-up, last evaluation, save);
    # runs from before that was logged lack it
    end_to_end = all(any("overhead_s" in r for r in rows) for _, rows in stages)
    wall += sum(r.get("overhead_s", 0) for _, rows in stages for r in rows) / 60
    pretrain_lines: list[str] = []
    if image_pretrain is not None:
        pre, got = image_pretrain["config"], image_pretrain["heldout"]
        wall += image_pretrain["wall_s"] / 60
        per_token = ""
        if pre.get("patch_weight"):
            per_token = (
                f", and a linear head on each token (weight {pre['patch_weight']}) predicting "
                "what its patch shows (the shape's colour, kind and size, where the shape's "
                "centre is, or the word): held-out patches right "
                + ", ".join(
                    f"{_PATCH_NAMES.get(g, g)} {100 * got['patch_' + g]:.1f}%" for g in PATCH_GROUPS
                )
            )
        pretrain_lines = [
            f"- Image encoder pretrained first (`mmllm.train.image_pretrain`, "
            f"{image_pretrain['wall_s'] / 60:.1f} min): {pre['steps']} steps x batch "
            f"{pre['batch_size']} of fresh scenes, a linear head on the mean and max of its "
            "tokens predicting the scene graph (colour-kind pairs present and on which side, "
            "size pairs, counts per kind, the word); held-out scenes with every pair right "
            f"{100 * got['pairs']:.1f}%, every pair's sides right {100 * got['sides']:.1f}%, "
            f"shape count {100 * got['count']:.1f}%, word {100 * got['word']:.1f}%"
            f"{per_token}. The heads are dropped; the whole model then trains from this "
            "encoder (`--image-init`).",
        ]
    lines = [
        f"# {name}",
        "",
        f"A {run['parameters'] / 1e6:.2f}M-parameter mmllm model trained from scratch on the "
        "synthetic world (shapes of named colours, sizes and positions; tones, counted beeps, "
        "chirps and noise). It captions and answers questions about images, sounds and both, "
        "on a laptop CPU, offline. It knows nothing outside that world.",
        "",
        "## Scores (held-out synthetic data, `mmllm eval`)",
        "",
        f"Held-out split: {h['_meta']['n']} records of `synthetic:heldout` (seeds never used in "
        "training). Exact match after VQAv2-style normalisation. Caption attributes: a caption "
        "counts as correct when every colour, shape kind (with its count) and the total count "
        "of the reference image caption are named correctly (for sounds: kind, pitch, timbre, "
        "beep count and direction), parsed by `mmllm.data.synthetic.caption_attributes`.",
        "",
        "| metric | held-out | held-out paraphrases | audio removed | images removed | "
        "majority baseline |",
        "|---|---|---|---|---|---|",
    ]
    for cat in CATEGORIES:
        lines.append(
            f"| {cat} questions | {_pct(h, cat)} | {_pct(p, cat)} | {_pct(no_a, cat)} "
            f"| {_pct(no_i, cat)} | {100 * base.get(cat, 0):.1f}% |"
        )
    lines += [
        f"| all questions | {_pct(h, 'overall')} | {_pct(p, 'overall')} | | | |",
        f"| caption attributes (image) | {_pct(h, 'caption_attributes/image')} | | | | |",
        f"| caption attributes (audio) | {_pct(h, 'caption_attributes/audio')} | | | | |",
        f"| caption BLEU-4 | {h.get('caption_bleu4', {}).get('score', float('nan')):.3f} | | | | |",
        f"| caption CIDEr | {h.get('caption_cider', {}).get('score', float('nan')):.3f} | | | | |",
        "",
        "The paraphrase split asks with question templates never used in training.",
        "",
        *_weak_types(h),
        "Per question type (held-out):",
        "",
        markdown_table({k: v for k, v in h.items() if k.startswith("qtype/")}),
        "",
        "## Recipe",
        "",
        "```bash",
        command,
        f"python -m scripts.tiny_card --checkpoint checkpoints/{name} --run {run_dir} "
        f"--n {h['_meta']['n']}",
        "```",
        "",
        architecture(stages[0][0]),
        *pretrain_lines,
        *training_lines(stages),
        "- Evaluation on `synthetic:heldout` (a separate seed stream from every training seed).",
        f"- Wall time: {wall:.1f} min (held-out evaluations during training"
        + (" and the image pretraining" if image_pretrain else "")
        + (f", {len(stages)} stages" if len(stages) > 1 else "")
        + f" included) on a 2-core x86_64 CPU, {hardware}, fp32: "
        + (
            "end to end, each stage's set-up, last held-out evaluation and save included "
            "(the Python process's start-up, seconds, not)."
            if end_to_end
            else "the time the training loops report, without each process's start-up and "
            "each stage's last held-out evaluation (about 20 s a stage more, end to end)."
        ),
        f"- Weights: {weights_mb:.1f} MB (`model.safetensors`, fp32). Tokenizer: byte-level BPE "
        "trained on the training split's text.",
        "",
        "![training curves](metrics.png)",
        "",
        "## Licence",
        "",
        "Apache-2.0, like mmllm. Trained only on data this project generates.",
        "",
    ]
    return "\n".join(lines)


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--run", required=True, type=Path, help="the training run folder")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--command", default=None, help="the training command, for the card")
    parser.add_argument(
        "--hardware",
        default=HARDWARE,
        help="how the training used the CPU, for the card's wall-time line",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    run = measure(args.checkpoint, args.n)
    train_config = json.loads((args.run / "train_config.json").read_text())
    metrics = _rows(args.run)
    command = args.command or "mmllm train ..."
    weights_mb = (args.checkpoint / "model.safetensors").stat().st_size / 1e6
    name = args.checkpoint.name
    pretrain_file = args.run / PRETRAIN_DIR / REPORT_FILE
    pretrain = json.loads(pretrain_file.read_text()) if pretrain_file.is_file() else None
    earlier = stage_dirs(args.run)
    earlier_stages = [
        (json.loads((run / "train_config.json").read_text()), _rows(run)) for run in earlier
    ]
    plot_metrics(
        [*(run / "metrics.jsonl" for run in earlier), args.run / "metrics.jsonl"],
        args.checkpoint / "metrics.png",
    )
    (args.checkpoint / "README.md").write_text(
        render_card(
            name,
            run,
            train_config,
            metrics,
            weights_mb,
            command,
            str(args.run),
            pretrain,
            args.hardware,
            earlier_stages,
        )
    )
    pinned = {k: v for k, v in run["pinned"].items() if not k.startswith("_")}
    scores = {
        "pinned": {"data": "synthetic:heldout", "n": PINNED_N, "seed": 0, "scores": pinned},
        # the answer confusion of the held-out split only: the ablations' is noise by design
        "heldout": {k: v for k, v in run["heldout"].items() if k != "_examples"},
        **{
            split: {k: v for k, v in run[split].items() if k not in ("_examples", "_confusion")}
            for split in ("heldout-paraphrase", "heldout-no-audio", "heldout-no-image")
        },
        "majority_baseline": run["majority_baseline"],
        "examples": run["heldout"]["_examples"],
    }
    (args.checkpoint / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    print(markdown_table(run["heldout"]))


if __name__ == "__main__":
    main()
