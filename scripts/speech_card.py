"""Measure the default model's hearing: word error rates, spoken questions, real-time factor.

    python scripts/speech_card.py --out checkpoints/mmllm-real/speech_scores.json

Each measure runs twice: with the model's listener (Whisper tiny.en with the model's decoder
adapter, ``scripts/train_speech_adapter.py``) and with Whisper tiny.en alone.

- Real human recordings: the spoken test sounds of Debian's ``alsa-utils`` ("Front Center",
  ...; apt-get install alsa-utils), a test set only. Our transcriber (CTranslate2) against
  Whisper tiny.en run by transformers from the same weights (``whisper_reference.py``), beam 5
  and greedy, on the same clips in the same run.
- espeak-ng speech, held out by voice and text: sentences of the licence texts in Debian's
  ``/usr/share/common-licenses`` (the adapter trains on none), read by dialects and variants
  the adapter never heard (``DIALECTS`` x ``VARIANTS``).
- Spoken questions about synthetic scenes: the held-out split's image questions read aloud by
  those voices, asked with ``ask(image, audio=clip)``, against the same questions typed.
- The real-time factor of ``transcribe`` on 60 s of speech, and words heard in audio without
  speech (noise, tones, the synthetic sounds).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jiwer
import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

import mmllm
from encoders.speech import SAMPLE_RATE, whisper_folder
from mmllm.data.sources import SyntheticSource
from mmllm.eval.metrics import normalize_answer
from mmllm.speech import Listener

sys.path.insert(0, str(Path(__file__).resolve().parent))
from whisper_reference import hf_transcribe, hf_whisper

from mmllm.processing import resample

ALSA = Path("/usr/share/sounds/alsa")
LICENSES = Path("/usr/share/common-licenses")
# held-out voices: dialects and variants the speech adapter never heard (its training voices are
# en, en-us, en-gb-x-gbclan, en-gb-x-gbcwmd x none, m1, m2, m4, m6, f1, f2, f5, klatt)
DIALECTS = ["en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc"]
VARIANTS = ["", "+f3", "+f4", "+m3", "+m5", "+m7"]
RATES = [140, 160, 175]


def voice(i: int) -> str:
    """The i-th held-out voice: every dialect with every variant in turn."""
    return DIALECTS[i % len(DIALECTS)] + VARIANTS[(i // len(DIALECTS)) % len(VARIANTS)]


def normalized(text: str) -> str:
    """Lower case, words only (apostrophes kept), one space: the text WER compares."""
    return " ".join(re.sub(r"[^a-z' ]+", " ", text.lower().replace("-", " ")).split())


def wer(references: list[str], hypotheses: list[str]) -> float:
    refs = [normalized(r) for r in references]
    hyps = [normalized(h) for h in hypotheses]
    return float(jiwer.wer(refs, hyps))


def speak(text: str, voice: str, rate: int, path: Path) -> Path:
    """espeak-ng reads ``text`` into a 16 kHz WAV at ``path``."""
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(path), text],
        check=True,
        capture_output=True,
    )
    data, rate_in = sf.read(path, dtype="float32")
    if rate_in != SAMPLE_RATE:
        data = torch.from_numpy(data)

        data = resample(data, rate_in, SAMPLE_RATE).numpy()
    sf.write(path, data, SAMPLE_RATE)
    return path


def license_sentences(n: int) -> list[str]:
    """``n`` distinct plain sentences (words, commas, periods) from the licence texts."""
    sentences: list[str] = []
    for file in sorted(LICENSES.iterdir()):
        if not file.is_file():
            continue
        text = re.sub(r"\s+", " ", file.read_text(errors="ignore"))
        for s in re.split(r"(?<=[.!?])\s", text):
            s = s.strip()
            if 40 < len(s) < 160 and re.fullmatch(r"[A-Za-z ,;'.-]+", s) and s not in sentences:
                sentences.append(s)
    step = max(1, len(sentences) // n)
    return sentences[::step][:n]


def real_recordings(listener: Listener, reference) -> dict:
    clips = sorted(p for p in ALSA.glob("*.wav") if p.stem != "Noise")
    truths = [p.stem.replace("_", " ") for p in clips]
    ours, hf_beam, hf_greedy = [], [], []
    for clip in clips:
        waveform = listener.audio(clip)
        ours.append(listener.heard(waveform).text)
        mel, _ = listener.recognizer.features(waveform[None], torch.tensor([waveform.shape[0]]))
        for out, beams in ((hf_beam, 5), (hf_greedy, 1)):
            ids = hf_transcribe(reference, mel, beams)[0]
            out.append(listener.recognizer.tokenizer.decode([i for i in ids if i < 50256]))
    return {
        "clips": [p.name for p in clips],
        "references": truths,
        "ours": ours,
        "transformers_beam5": hf_beam,
        "transformers_greedy": hf_greedy,
        "wer_ours": wer(truths, ours),
        "wer_transformers_beam5": wer(truths, hf_beam),
        "wer_transformers_greedy": wer(truths, hf_greedy),
    }


def espeak_speech(listener: Listener, folder: Path, n: int) -> dict:
    sentences = license_sentences(n)
    truths, ours, per_voice = [], [], {}
    for i, sentence in enumerate(tqdm(sentences, desc="espeak-ng", unit="clip")):
        dialect = DIALECTS[i % len(DIALECTS)]
        clip = speak(sentence, voice(i), RATES[i % len(RATES)], folder / f"s{i}.wav")
        heard = listener.transcribe(clip).text
        truths.append(sentence)
        ours.append(heard)
        per_voice.setdefault(dialect, ([], []))
        per_voice[dialect][0].append(sentence)
        per_voice[dialect][1].append(heard)
    return {
        "n": len(truths),
        "wer": wer(truths, ours),
        "wer_per_dialect": {v: wer(r, h) for v, (r, h) in per_voice.items()},
        "examples": [{"said": t, "heard": h} for t, h in list(zip(truths, ours, strict=True))[:10]],
    }


def spoken_questions(model, folder: Path, n: int) -> dict:
    source = SyntheticSource("heldout", seed=1)
    records = []
    index = 0
    while len(records) < n:
        record = source[index]
        index += 1
        if record.task == "vqa" and record.images and not record.audio:
            records.append(record)
    typed_hits, spoken_hits, heard_exactly = [], [], []
    for i, record in enumerate(tqdm(records, desc="spoken questions", unit="question")):
        image = record.images[0]
        clip = speak(record.prompt, voice(i + 1), 160, folder / "q.wav")
        typed = model.ask(image, record.prompt)
        try:
            spoken = model.ask(image, audio=clip)
            answer, heard = spoken.text, spoken.question
        except mmllm.TextError:
            answer, heard = "", ""
        truth = normalize_answer(record.target)
        typed_hits.append(normalize_answer(typed.text) == truth)
        spoken_hits.append(normalize_answer(answer) == truth)
        heard_exactly.append(normalized(heard) == normalized(record.prompt))
    return {
        "n": len(records),
        "typed_accuracy": float(np.mean(typed_hits)),
        "spoken_accuracy": float(np.mean(spoken_hits)),
        "questions_heard_exactly": float(np.mean(heard_exactly)),
    }


def real_time_factor(listener: Listener, folder: Path) -> dict:
    text = " ".join(license_sentences(40))
    clip = speak(text, "en-us", 160, folder / "long.wav")
    data, _ = sf.read(clip, dtype="float32")
    data = data[: 60 * SAMPLE_RATE]
    start = time.perf_counter()
    transcript = listener.heard(torch.from_numpy(data))
    spent = time.perf_counter() - start
    return {
        "seconds": transcript.seconds,
        "spent_s": spent,
        "real_time_factor": spent / transcript.seconds,
        "threads": torch.get_num_threads(),
        "windows": len(transcript.windows),
    }


def no_speech(listener: Listener) -> dict:
    rng = np.random.default_rng(0)
    t = np.arange(5 * SAMPLE_RATE) / SAMPLE_RATE
    clips = {
        "silence": np.zeros_like(t),
        "white noise": 0.1 * rng.standard_normal(t.shape),
        "440 Hz tone": 0.5 * np.sin(2 * np.pi * 440 * t),
        "chirp": 0.5 * np.sin(2 * np.pi * (200 + 400 * t) * t),
    }
    heard = {k: listener.heard(torch.tensor(v, dtype=torch.float32)).text for k, v in clips.items()}
    if (ALSA / "Noise.wav").is_file():
        heard["alsa Noise.wav"] = listener.transcribe(ALSA / "Noise.wav").text
    source = SyntheticSource("heldout", seed=2)
    sounds = [r.audio[0] for r in (source[i] for i in range(200)) if r.audio][:20]
    invented = [listener.transcribe(s).text for s in sounds]
    heard["synthetic sounds with words"] = sum(bool(x) for x in invented)
    heard["synthetic sounds"] = len(sounds)
    return heard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the scores' JSON file")
    parser.add_argument("--sentences", type=int, default=60)
    parser.add_argument("--questions", type=int, default=240)
    parser.add_argument("--checkpoint", default=None, help="the model (default: the shipped one)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = mmllm.load(args.checkpoint, device="cpu")
    listeners = {"model": model.listener, "whisper": Listener()}  # with its adapter; without
    adapter = model.listener.adapter
    scores: dict = {"adapter": Path(adapter).name if adapter else None}  # beside the model
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, listener in listeners.items():
            part = scores[name] = {}
            if ALSA.is_dir():
                part["real_recordings"] = real_recordings(listener, hf_whisper(listener_folder()))
            part["espeak"] = espeak_speech(listener, folder, args.sentences)
            part["no_speech"] = no_speech(listener)
            model.listener = listener
            part["spoken_questions"] = spoken_questions(model, folder, args.questions)
        scores["model"]["real_time"] = real_time_factor(listeners["model"], folder)
    args.out.write_text(json.dumps(scores, indent=2) + "\n")
    print(json.dumps(summary(scores), indent=2))


def summary(scores: dict) -> dict:
    """The headline figures of each listener."""
    keys = ("wer", "accuracy", "real_time_factor", "questions_heard_exactly", "with words")
    out = {}
    for name in ("model", "whisper"):
        for part, values in scores[name].items():
            out[f"{name}/{part}"] = {k: v for k, v in values.items() if any(x in k for x in keys)}
    return out


def listener_folder() -> Path:
    return whisper_folder()


if __name__ == "__main__":
    main()
