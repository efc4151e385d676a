"""Train the speech recognizer's decoder adapter on espeak-ng speech (``encoders.speech_adapter``).

    python scripts/train_speech_adapter.py --work runs/speech-adapter \
        --out checkpoints/mmllm-real/speech_adapter.safetensors

Whisper tiny.en hears espeak-ng's synthetic voices badly (19.7% WER on licence sentences, a third
of the synthetic world's questions word for word). This teaches its decoder those voices and the
questions people ask the model, without touching the encoder:

1. clips: sentences of Debian's package documentation (``/usr/share/doc``; none of the licence
   texts the evaluation reads) and the synthetic world's training questions and captions, read
   by espeak-ng in the training voices (4 dialects x 9 variants; the evaluation's voices are
   other dialects and variants), at random rates and pitches, half with noise at 10-40 dB SNR,
   after up to 1 s of silence;
2. their Whisper encoder states, computed once by CTranslate2 (int8, as at inference) and kept
   in ``--work`` as fp16;
3. LoRA factors (rank ``--rank``) on every decoder projection, trained with the transcript in
   Whisper's timestamped format (``<|0.00|> text<|end|>``), the rest of Whisper frozen.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import ctranslate2
import numpy as np
import soundfile as sf
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from encoders.speech import SAMPLE_RATE, SECONDS_PER_TIMESTAMP, WINDOW_SECONDS, whisper_folder
from mmllm.data.sources import SyntheticSource
from mmllm.model.lora import LoRALinear
from mmllm.processing import resample
from mmllm.speech import Listener

sys.path.insert(0, str(Path(__file__).resolve().parent))
from whisper_reference import hf_whisper

DIALECTS = ["en", "en-us", "en-gb-x-gbclan", "en-gb-x-gbcwmd"]
VARIANTS = ["", "+m1", "+m2", "+m4", "+m6", "+f1", "+f2", "+f5", "+klatt"]
# --voices wide: espeak-ng's named voice variants too (none of the evaluation's +f3 +f4 +m3
# +m5 +m7): more kinds of voice, so that the adapter hears past its training voices
WIDE_VARIANTS = VARIANTS + [
    f"+{name}"
    for name in [
        "Alex",
        "Andy",
        "Annie",
        "adam",
        "aunty",
        "belinda",
        "benjamin",
        "caleb",
        "david",
        "ed",
        "edward",
        "grandma",
        "grandpa",
        "john",
        "klatt2",
        "klatt3",
        "klatt4",
        "klatt5",
        "linda",
        "m8",
        "max",
        "michel",
        "norbert",
        "paul",
        "quincy",
        "rob",
        "robert",
        "steph",
        "travis",
        "victor",
        "zac",
        "Lee",
        "Mike",
        "Michael",
        "shelby",
    ]
]
PLAIN = re.compile(r"[A-Za-z ,;'.?!-]+")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


def sentences(pattern: str, exclude: set[str]) -> list[str]:
    """Plain sentences (20-150 characters of words and punctuation) of the files ``pattern``
    matches, none of ``exclude``."""
    found: set[str] = set()
    for file in sorted(Path("/").glob(pattern.lstrip("/"))):
        if "copyright" in file.name or "changelog" in file.name or not file.is_file():
            continue
        try:
            opener = gzip.open if file.suffix == ".gz" else open
            with opener(file, "rt") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError, EOFError):
            continue
        for s in re.split(r"(?<=[.!?])\s", re.sub(r"\s+", " ", text)):
            s = s.strip()
            if 20 < len(s) < 150 and PLAIN.fullmatch(s) and s not in exclude:
                found.add(s)
    return sorted(found)


def training_texts(n: int, rng: random.Random, seed: int = 0) -> list[str]:
    """Half documentation sentences, half the synthetic world's questions and captions."""
    licences = set(sentences("/usr/share/common-licenses/*", set()))
    docs = sentences("/usr/share/doc/*/*", licences)
    rng.shuffle(docs)
    # each seed reads other questions and captions of the training split
    world, synthetic, index = SyntheticSource("train", seed=7 + seed), [], 0
    while len(synthetic) < n // 2:
        record = world[index]
        index += 1
        text = record.prompt if record.task == "vqa" else record.target
        if PLAIN.fullmatch(text) and len(text) < 150:
            synthetic.append(text[0].upper() + text[1:])
    texts = docs[: n - len(synthetic)] + synthetic
    rng.shuffle(texts)
    return texts


def make_clips(n: int, work: Path, seed: int, variants: list[str] = VARIANTS) -> None:
    """``work/states.npy`` ``(n, 1500, 384)`` fp16 and ``work/clips.json``, read by the
    training dialects with ``variants``."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    listener = Listener()
    recognizer = listener.recognizer
    texts = training_texts(n, rng, seed)
    states = np.lib.format.open_memmap(
        work / "states.npy", mode="w+", dtype=np.float16, shape=(n, 1500, 384)
    )
    clips = []
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "clip.wav"
        for i, text in enumerate(tqdm(texts, desc="clips", unit="clip")):
            voice = rng.choice(DIALECTS) + rng.choice(variants)
            rate, pitch = rng.randint(120, 190), rng.randint(25, 75)
            command = ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w"]
            subprocess.run([*command, str(wav), text], check=True, capture_output=True)
            data, rate_in = sf.read(wav, dtype="float32")
            waveform = resample(torch.from_numpy(data), rate_in, SAMPLE_RATE)
            if rng.random() < 0.5:
                snr = rng.uniform(10, 40)
                power = waveform.pow(2).mean()
                waveform = waveform + torch.randn_like(waveform) * (power / 10 ** (snr / 10)).sqrt()
            lead = int(rng.uniform(0, 1) * SAMPLE_RATE)
            waveform = torch.cat([torch.zeros(lead), waveform])[: int(29 * SAMPLE_RATE)]
            mel, _ = recognizer.features(waveform[None], torch.tensor([waveform.shape[0]]))
            features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy()))
            states[i] = np.asarray(recognizer.model.encode(features, to_cpu=True))[0]
            start, end = lead / SAMPLE_RATE, waveform.shape[0] / SAMPLE_RATE
            clips.append({"text": text, "voice": voice, "start": start, "end": end})
    states.flush()
    (work / "clips.json").write_text(json.dumps(clips))


def add_adapters(model, rank: int) -> list[LoRALinear]:
    """LoRA on every projection of every decoder layer (in place); the adapted layers."""
    adapted = []
    for layer in model.model.decoder.layers:
        for attention in (layer.self_attn, layer.encoder_attn):
            for name in PROJECTIONS:
                setattr(attention, name, LoRALinear.wrap(getattr(attention, name), rank, rank))
                adapted.append(getattr(attention, name))
        for name in ("fc1", "fc2"):
            setattr(layer, name, LoRALinear.wrap(getattr(layer, name), rank, rank))
            adapted.append(getattr(layer, name))
    return adapted


def train(
    works: list[Path], out: Path, steps: int, rank: int, lr: float, batch: int, seed: int
) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    folder = whisper_folder()
    tokenizer = Listener().recognizer.tokenizer
    model = hf_whisper(folder)
    model.requires_grad_(False)
    adapted = add_adapters(model, rank)
    params = [p for layer in adapted for p in (layer.lora_a, layer.lora_b)]
    # every work folder's clips: (its states, the clip) pairs
    clips = []
    for work in works:
        states = np.load(work / "states.npy", mmap_mode="r")
        for i, clip in enumerate(json.loads((work / "clips.json").read_text())):
            clips.append((states, i, clip))
    start_id = tokenizer.token_to_id("<|startoftranscript|>")
    end_id = tokenizer.token_to_id("<|endoftext|>")
    first_time = tokenizer.token_to_id("<|notimestamps|>") + 1

    def time_token(seconds: float) -> int:
        return first_time + round(min(seconds, WINDOW_SECONDS) / SECONDS_PER_TIMESTAMP)

    def target(clip: dict) -> list[int]:
        words = tokenizer.encode(" " + clip["text"]).ids
        return [start_id, time_token(clip["start"]), *words, time_token(clip["end"]), end_id]

    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    progress = tqdm(range(steps), desc="adapter", unit="step")
    for step in progress:
        warm = min(1.0, (step + 1) / 30)
        for group in optimizer.param_groups:
            group["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * step / steps))
        rows = random.sample(range(len(clips)), batch)
        sequences = [target(clips[i][2]) for i in rows]
        length = max(len(s) for s in sequences) - 1
        inputs = torch.full((batch, length), end_id)
        labels = torch.full((batch, length), -100)
        for b, sequence in enumerate(sequences):
            inputs[b, : len(sequence) - 1] = torch.tensor(sequence[:-1])
            labels[b, : len(sequence) - 1] = torch.tensor(sequence[1:])
        encoded = np.stack([clips[i][0][clips[i][1]] for i in rows]).astype(np.float32)
        encoded = torch.from_numpy(encoded)
        hidden = model.model.decoder(input_ids=inputs, encoder_hidden_states=encoded)
        logits = model.proj_out(hidden.last_hidden_state)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        progress.set_postfix(loss=f"{loss.item():.3f}")
    factors = {
        k.removeprefix("model."): v.detach().contiguous()
        for k, v in model.state_dict().items()
        if ".lora_" in k
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(factors, str(out), metadata={"scale": str(adapted[0].scale), "steps": str(steps)})
    print(f"wrote {out}: {sum(v.numel() for v in factors.values())} parameters")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--work",
        type=Path,
        nargs="+",
        required=True,
        help="folders of clips and encoder states: the first is made if it holds none; "
        "training reads them all",
    )
    parser.add_argument(
        "--voices",
        choices=["base", "wide"],
        default="base",
        help="the voice variants new clips are read with (wide: named variants too)",
    )
    parser.add_argument("--out", type=Path, required=True, help="the adapter file to write")
    parser.add_argument("--clips", type=int, default=1600)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    first = args.work[0]
    first.mkdir(parents=True, exist_ok=True)
    if not (first / "clips.json").is_file():
        variants = WIDE_VARIANTS if args.voices == "wide" else VARIANTS
        make_clips(args.clips, first, args.seed, variants)
    train(args.work, args.out, args.steps, args.rank, args.lr, args.batch, args.seed)


if __name__ == "__main__":
    main()
