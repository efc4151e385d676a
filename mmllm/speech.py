"""Spoken words for the tasks: transcripts, speech captions and spoken questions.

The default model hears speech through ``encoders.speech.SpeechRecognizer`` (Whisper tiny.en
in CTranslate2), built on first use: ``Listener.transcribe`` reads clips of up to an hour;
``Listener.heard`` reads an already decoded clip and says whether it holds speech.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from encoders.audio import AudioEncoderConfig
from encoders.speech import SAMPLE_RATE, SpeechError, SpeechRecognizer, Transcript
from mmllm.errors import AudioError
from mmllm.processing import AudioProcessor

MAX_TRANSCRIBE_SECONDS = 3600.0
QUOTE_CHARS = 200  # a speech caption quotes at most this much, then "..."
ADAPTER_FILE = "speech_adapter.safetensors"  # a checkpoint's adapter for the recognizer
# a clip shorter than the recognizer's 30 s window is also read as played at 0.9 and 1.1 times
# its speed (speed perturbation's usual factors, Ko et al., 2015): the likeliest reading is its
# transcript (``SpeechRecognizer``'s ``speeds``), and a spoken question's readings at all three
# are pooled (``mmllm.tasks``). Spoken questions, held-out voices, 240: 90.0% right at 1.0
# alone, 93.3% with 0.9 and 1.1; 240 others (another seed, voice order and rates) 93.75% ->
# 94.6%, typed 98.3%. espeak-ng WER 24.6% -> 20.9%; real recordings unchanged.
TRANSCRIBE_SPEEDS = (1.0, 0.9, 1.1)


class Listener:
    """Transcribes audio with a speech recognizer made when first needed (with the decoder
    ``adapter`` file of the model's checkpoint, when it has one)."""

    def __init__(
        self, recognizer: SpeechRecognizer | None = None, adapter: str | Path | None = None
    ):
        self._recognizer = recognizer
        self.adapter = adapter
        self.audio = AudioProcessor(
            AudioEncoderConfig(sample_rate=SAMPLE_RATE, max_seconds=MAX_TRANSCRIBE_SECONDS),
            max_seconds=MAX_TRANSCRIBE_SECONDS,
        )

    @property
    def recognizer(self) -> SpeechRecognizer:
        if self._recognizer is None:
            try:
                self._recognizer = SpeechRecognizer(adapter=self.adapter, speeds=TRANSCRIBE_SPEEDS)
            except SpeechError as err:
                raise AudioError(f"cannot transcribe: {err}") from err
        return self._recognizer

    @classmethod
    def of_checkpoint(cls, folder: str | Path) -> Listener:
        """The listener of the checkpoint in ``folder`` (its adapter, if it ships one)."""
        adapter = Path(folder) / ADAPTER_FILE
        return cls(adapter=adapter if adapter.is_file() else None)

    def transcribe(self, source: Any, sample_rate: int | None = None) -> Transcript:
        """A file, bytes or samples (``mmllm.processing.AudioProcessor``'s inputs) -> what is
        said in it, with segment times."""
        return self.heard(self.audio(source, sample_rate))

    def heard(self, waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> Transcript:
        """A decoded mono waveform ``(S,)`` -> its transcript (no segments: no speech)."""
        if sample_rate != SAMPLE_RATE:
            waveform = self.audio(waveform, sample_rate)
        return self.recognizer(waveform)

    def readings(
        self, waveform: torch.Tensor, n: int, speeds: tuple[float, ...] = (1.0,)
    ) -> list[tuple[str, float]]:
        """Up to ``n`` readings at each of ``speeds`` of a short decoded clip ``(S,)`` (one
        recognizer window), pooled, with their mean token log-probabilities, likeliest first
        (``SpeechRecognizer.readings``)."""
        return self.recognizer.readings(waveform, n, speeds)


def speech_caption(transcript: Transcript, max_chars: int = QUOTE_CHARS) -> str:
    """``someone says: "..."``, the quote cut at a word near ``max_chars``."""
    text = transcript.text
    if len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0].rstrip(",;:") + "..."
    return f'someone says: "{text}"'
