"""Build the bank of known sounds (``mmllm.sound_bank``) and measure it on held-out clips.

    mmllm data tuxpaint --out tux
    python scripts/build_sound_bank.py --named tux/sounds_train.jsonl \
        --heldout tux/sounds_heldout.jsonl --out checkpoints/mmllm-real/sound_bank.safetensors \
        --check

Named entries: the training part of each Tux Paint sound effect (the seen-source split), named
by its stamp's description ("A frog." -> "a frog"; descriptions that are sentences, not
things, are left out). Reject entries: ``--rejects`` of the synthetic world's training sounds,
and 120 made clips of silence, noises, tones and chirps (seeded). The report gives, for the
held-out parts, the share whose caption names the source (``mmllm eval``'s noun rule) and the
share named at all; and how often a sound is named among held-out synthetic sounds and other
made clips (other seeds), which must stay near 0 for the synthetic scores to hold. ``--check``
then captions the held-out clips as users would, with the checkpoint that holds the bank, and
writes every figure to ``sound_scores.json`` beside the bank (the model card reads it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import mmllm
from encoders import AudioEncoderConfig
from mmllm.data.jsonl import read_jsonl
from mmllm.data.sources import SyntheticSource
from mmllm.data.tuxpaint import main_noun, mentions
from mmllm.processing import AudioProcessor
from mmllm.sound_bank import SAMPLE_RATE, SoundBank, sound_caption, sound_name

SCORES_FILE = "sound_scores.json"  # beside the bank, for the model card
LOADER = AudioProcessor(AudioEncoderConfig(sample_rate=SAMPLE_RATE, max_seconds=30), truncate=True)


def synthetic_sounds(split: str, n: int, seed: int) -> list[np.ndarray]:
    """The first ``n`` sound-only records' clips of a synthetic split."""
    source, out, i = SyntheticSource(split, seed=seed), [], 0
    while len(out) < n:
        record = source[i]
        i += 1
        if record.audio and not record.images:
            out.append(LOADER(record.audio[0]).numpy())
    return out


def made_clips(n: int, seed: int) -> list[np.ndarray]:
    """Silence, white noise, tones, chirps, brown noise and noise with nothing above a cutoff
    (0.5-6 kHz), of 0.2-3 s at random levels, in turn."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        t = np.arange(int(rng.uniform(0.2, 3.0) * SAMPLE_RATE)) / SAMPLE_RATE
        kind = i % 6
        level = rng.uniform(0.01, 0.5)
        if kind == 0:
            clip = np.zeros_like(t)
        elif kind == 1:
            clip = level * rng.standard_normal(t.shape)
        elif kind == 2:
            clip = level * np.sin(2 * np.pi * rng.uniform(100, 4000) * t)
        elif kind == 3:
            f0, rise = rng.uniform(100, 1000), rng.uniform(100, 2000)
            clip = level * np.sin(2 * np.pi * (f0 + rise * t) * t)
        elif kind == 4:
            walk = np.cumsum(rng.standard_normal(t.shape))
            clip = level * (walk - walk.mean()) / (walk.std() + 1e-9)
        else:  # noise with nothing above a cutoff, as recorded at a lower rate
            spectrum = np.fft.rfft(rng.standard_normal(t.shape))
            cutoff = rng.uniform(500, 6000) * len(t) / SAMPLE_RATE
            spectrum[int(cutoff) :] = 0
            clip = np.fft.irfft(spectrum, len(t))
            clip = level * clip / (clip.std() + 1e-9)
        clips.append(clip.astype(np.float32))
    return clips


def named_clips(path: Path) -> list[tuple[str, np.ndarray]]:
    out = []
    for record in read_jsonl(path):
        name = sound_name(record.target)
        if name is not None and record.audio:
            out.append((name, LOADER(record.audio[0]).numpy()))
    return out


def report(bank: SoundBank, heldout: Path) -> dict:
    records = [r for r in read_jsonl(heldout) if r.audio]
    named = right = 0
    for record in records:
        match = bank.match(LOADER(record.audio[0]).numpy())
        named += match is not None
        right += match is not None and mentions(sound_caption(match), main_noun(record.target))
    synthetic = synthetic_sounds("heldout", 200, seed=5)
    made = made_clips(120, seed=9)
    return {
        "heldout": len(records),
        "names_the_source": right / len(records),
        "named_at_all": named / len(records),
        "synthetic_heldout_named": sum(bank.match(c) is not None for c in synthetic) / 200,
        "made_clips": len(made),
        "made_clips_named": sum(bank.match(c) is not None for c in made) / len(made),
    }


def caption_check(heldout: Path, checkpoint: str | None) -> dict:
    """What users get: ``caption(audio=clip)`` of a checkpoint (speech first, then the bank,
    then the model) on each held-out clip, and on held-out synthetic sounds."""
    api = mmllm.load(checkpoint, device="cpu")
    records = [r for r in read_jsonl(heldout) if r.audio]
    captions = api.caption(audio=[str(r.audio[0]) for r in records])
    right = [mentions(str(c), main_noun(r.target)) for r, c in zip(records, captions, strict=True)]
    synthetic = api.caption(audio=synthetic_sounds("heldout", 100, seed=7))
    return {
        "caption_names_the_source": sum(right) / len(records),
        "synthetic_captions_naming_a_known_sound": sum(
            str(c).startswith("the sound of") for c in synthetic
        )
        / len(synthetic),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--named", type=Path, required=True, help="JSONL of named sound clips")
    parser.add_argument("--heldout", type=Path, help="JSONL of held-out clips to measure")
    parser.add_argument("--rejects", type=int, default=300, help="synthetic sounds to reject")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--check", nargs="?", const="", help="then caption --heldout with this checkpoint "
        "(default: the shipped one), which must hold the new bank"
    )  # fmt: skip
    args = parser.parse_args()
    rejects = synthetic_sounds("train", args.rejects, seed=0) + made_clips(120, seed=0)
    bank = SoundBank.build(named_clips(args.named), rejects)
    scores = report(bank, args.heldout) if args.heldout else None
    if scores is not None and scores["named_at_all"] > 0:
        bank.precision = scores["names_the_source"] / scores["named_at_all"]
        scores["precision"] = bank.precision
    bank.save(args.out)
    print(f"{args.out}: {sum(bank.named)} named entries ({len(bank.known())} names), "
          f"{len(bank.names) - sum(bank.named)} reject entries")  # fmt: skip
    if scores is not None:
        print(json.dumps(scores, indent=2))
    if args.check is not None and args.heldout:
        scores |= caption_check(args.heldout, args.check or None)
        print(json.dumps(scores, indent=2))
        (args.out.parent / SCORES_FILE).write_text(json.dumps(scores, indent=2) + "\n")


if __name__ == "__main__":
    main()
