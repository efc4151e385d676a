"""The user-facing API: ``mmllm.load()`` and captioning, alt text, question answering.

model = mmllm.load()                       # the shipped mmllm-tiny
model.caption("cat.png")                   # -> str
model.ask("scene.png", "what color is the circle?")        # -> Answer(text, prob, ...)
model.ask(audio="beeps.wav", question="how many beeps?")
model.caption(["a.png", "b.png"], batch_size=8)            # -> list[str]
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.speech import SILENT_PEAK
from mmllm.compiled import CompiledModel, worth_compiling
from mmllm.confidence import (
    PHOTO,
    Calibration,
    MediaDistance,
    checkpoint_trust,
    media_kind,
    pooled_tokens,
    recognition_features,
    token_features,
)
from mmllm.errors import ConfigError, GenerationError, InputError, TextError
from mmllm.evidence import (
    Count,
    Existence,
    can_count,
    count,
    count_thing,
    existence,
    existence_thing,
)
from mmllm.generate import (
    SamplingConfig,
    autocast_for,
    beam_search_ids,
    generate_ids,
    left_pad,
    stream_ids,
)
from mmllm.grounding import asks_what_it_is, grounded_text
from mmllm.model.cache import MediaContext
from mmllm.model.media import MediaBatch
from mmllm.model.multimodal import MultimodalLM
from mmllm.packed import pack_linears
from mmllm.planner import RequestPlan, plan_request
from mmllm.processing import MediaProcessor, resample
from mmllm.prompts import caption_prompt
from mmllm.quantize import quantize as quantize_model
from mmllm.sound_bank import SAMPLE_RATE as SOUND_RATE
from mmllm.sound_bank import SoundBank, sound_caption
from mmllm.speech import TRANSCRIBE_SPEEDS, Listener, speech_caption
from mmllm.tokenizer import Tokenizer, valid_text
from mmllm.weights.checkpoint import (  # noqa: F401  (resolve_checkpoint: part of the API)
    DEFAULT_CHECKPOINT,
    checkpoint_dirs,
    load_model,
    load_tokenizer,
    resolve_checkpoint,
)
from mmllm.weights.hf_import import convert as convert_hf
from mmllm.weights.hf_import import is_hf_folder, read_generation

log = logging.getLogger(__name__)

FILLER = re.compile(r"^(an?\s+)?(image|picture|photo|photograph|drawing)\s+(of|showing)\s+", re.I)


UNSURE = "(not sure what this shows)"
SILENCE = "silence"  # the caption of a clip with no sample above SILENT_PEAK
ANSWER_TOKENS = 16  # the longest open answer (ask), after its first token
ANSWER_ROOM = 1 + ANSWER_TOKENS  # what a question leaves free of the model's context
SPOKEN_READINGS = 5  # the listener's readings of a spoken question that are asked (_ask_spoken)
# ... at each of the listener's speeds (mmllm.speech.TRANSCRIBE_SPEEDS)
# only readings this close to the likeliest (mean token log-probability) are asked: a reading
# the recognizer finds much less likely is not taken however surely it is answered (on 240
# held-out spoken questions, margins from 0.1 to 1.0 all gave 90.0-90.4% right)
READING_MARGIN = 0.3


class ScoredText(str):
    """A generated text (caption, alt text, free generation) that is still a ``str``, with
    ``confidence``: the probability that it is right (``mmllm.confidence``; ``calibrated``
    False: the raw mean token probability of a checkpoint without a calibration). Below a
    ``min_confidence`` it is ``abstained``: the text says so plainly (``UNSURE``) and
    ``guess`` keeps what the model would have said."""

    confidence: float
    calibrated: bool
    abstained: bool
    guess: str
    token_scores: tuple[float, ...]  # mean and minimum token log-probability, if known

    def __new__(
        cls,
        text: str,
        confidence: float,
        calibrated: bool,
        min_confidence: float | None = None,
        token_scores: tuple[float, ...] = (),
    ) -> ScoredText:
        abstained = _below(confidence, min_confidence)
        self = super().__new__(cls, UNSURE if abstained else text)
        self.confidence, self.calibrated = float(confidence), calibrated
        self.abstained, self.guess = abstained, text
        self.token_scores = tuple(token_scores)
        return self

    @property
    def _limit(self) -> float | None:
        """A ``min_confidence`` that gives this text's ``abstained`` again."""
        return math.inf if self.abstained else None

    def __reduce__(self):  # copy and pickle keep the scores
        args = (self.guess, self.confidence, self.calibrated, self._limit, self.token_scores)
        return (ScoredText, args)

    def with_limit(self, min_confidence: float | None) -> ScoredText:
        """The same text and scores, abstained if the confidence is below ``min_confidence``."""
        return ScoredText(
            self.guess, self.confidence, self.calibrated, min_confidence, self.token_scores
        )

    def with_text(self, text: str) -> ScoredText:
        """The same scores on another wording of the text (e.g. alt text from a caption)."""
        return ScoredText(text, self.confidence, self.calibrated, self._limit, self.token_scores)


@dataclass
class Answer:
    """An answer, its probability under the model, and the runners-up with theirs.
    ``confidence``: the probability that the answer is right (``ScoredText``); below
    ``min_confidence`` the answer is ``abstained`` (``text`` says so, ``guess`` keeps it)."""

    text: str
    prob: float
    alternatives: list[tuple[str, float]] = field(default_factory=list)
    confidence: float = 0.0
    calibrated: bool = False
    abstained: bool = False
    guess: str = ""
    question: str = ""  # the question answered (what was heard, for a spoken one)
    # the recognizers' finding an existence or counting answer was read off
    # (``mmllm.evidence``), else None
    evidence: Existence | Count | None = None

    def __str__(self) -> str:
        return self.text


def load(
    path: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    quantize: str | None = None,
    compile: bool | None = None,
) -> MMLLM:
    """Load a checkpoint (default: the shipped ``mmllm-real``), or a published Hugging Face
    captioner's folder (converted in memory: ``mmllm.weights.hf_import``), ready for inference.

    device: default CUDA when present, else CPU. Weights stay fp32 unless ``dtype`` says
    otherwise; on CUDA, inference runs under bf16 autocast. On a CPU, eager inference runs on
    packed weights (``mmllm.packed``).
    quantize: ``"int8"`` quantizes the linear layers for faster CPU inference.
    compile: generate through a compiled decode step, prompt pass and image encoder
    (``mmllm.compiled``). None (the default) compiles when a job is large enough to pay for the
    compile (``MMLLM.expect``; ``mmllm.compiled.AUTO_COMPILE_MIN_ITEMS`` inputs), True now,
    False never. Not with ``quantize``.
    """
    if compile and quantize is not None:
        raise ConfigError("compile and quantize do not combine: choose one")
    folder = resolve_checkpoint(path)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if is_hf_folder(folder):
        imported = convert_hf(folder)
        model, tokenizer, generation = imported.model, imported.tokenizer, imported.generation
    else:
        model, tokenizer, generation = load_model(folder), None, read_generation(folder)
    model = model.to(device=device, dtype=dtype).eval()
    if quantize is not None:
        model = quantize_model(model, quantize)
    else:
        pack_linears(model)  # large fp32 CPU products through oneDNN (mmllm.packed)
    calibration, distance = checkpoint_trust(folder)
    return MMLLM(
        model,
        tokenizer or load_tokenizer(folder),
        calibration=calibration,
        media_distance=distance,
        listener=Listener.of_checkpoint(folder),
        compile=compile,
        generation=generation,
        sound_bank=SoundBank.of_checkpoint(folder),
    )


class MMLLM:
    """A loaded model with its tokenizer and processors: the tasks users call."""

    def __init__(
        self,
        model: MultimodalLM,
        tokenizer: Tokenizer,
        truncate_audio: bool = False,
        calibration: Calibration | None = None,
        media_distance: MediaDistance | None = None,
        listener: Listener | None = None,
        compile: bool | None = None,
        generation: dict[str, int] | None = None,
        sound_bank: SoundBank | None = None,
    ):
        """``truncate_audio``: cut clips longer than the audio encoder's window to it (and refuse
        only clips over the memory bound) instead of refusing them. ``calibration`` and
        ``media_distance`` (``mmllm.confidence``, stored with a checkpoint) turn scores into
        calibrated confidences; without them a confidence is the raw token probability.
        ``listener``: who hears speech (default: Whisper tiny.en without an adapter).
        ``compile``: when to compile decoding (see :func:`load`, :meth:`expect`).
        ``generation``: the model's own caption defaults (``max_new_tokens``, ``num_beams``:
        an imported model's ``generation.json``). ``sound_bank``: the known sounds a sound
        caption names (``mmllm.sound_bank``), or None."""
        self.model = model
        self.generation = dict(generation or {})
        self.compile = compile
        self.compiled = CompiledModel(model) if compile else None  # compiles on first use
        self.tokenizer = tokenizer
        self.truncate_audio = truncate_audio
        self.calibration = calibration
        self.media_distance = media_distance if calibration is not None else None
        self.media_processor = MediaProcessor(
            model.config.image,
            model.config.audio,
            truncate_audio=truncate_audio,
            recognizer=model.config.recognizer,
        )
        self.image_processor = self.media_processor.image
        self.audio_processor = self.media_processor.audio
        self.listener = listener or Listener()  # its recognizer is made on first use
        self.sound_bank = sound_bank

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- tasks -------------------------------------------------------------------------------
    def expect(self, items: int) -> bool:
        """Announce a job of ``items`` inputs: with ``compile=None`` decoding is compiled from
        ``mmllm.compiled.AUTO_COMPILE_MIN_ITEMS`` inputs on (where a compiler is at hand), with
        True always, with False never. Returns whether decoding is compiled."""
        if self.compiled is None and worth_compiling(self.compile, items, self.model):
            self.compiled = CompiledModel(self.model)
            if self.compile is None:  # say why the first batch takes a while
                log.warning(
                    "%d inputs: compiling decoding once (a minute or more on a small CPU; "
                    "compile=False / --no-compile turns this off)",
                    items,
                )
        return self.compiled is not None

    def caption(
        self,
        images: Any = None,
        batch_size: int = 8,
        max_new_tokens: int | None = None,
        audio: Any = None,
        num_beams: int | None = None,
        min_confidence: float | None = None,
        listen: bool = True,
    ) -> Any:
        """A caption per image (or per sound with ``audio=``); a list in gives a list out.

        Each caption is a ``ScoredText`` (a ``str`` with its ``confidence``); one below
        ``min_confidence`` says so instead of guessing (``abstained``, ``guess``). A clip that
        holds speech is captioned with what is said (``someone says: "..."``), one that sounds
        like a known sound with its name (``the sound of a frog``: ``mmllm.sound_bank``), a
        silent one as ``silence`` (``caption_heard``); ``listen=False``: the model's sound
        caption only. ``max_new_tokens`` and ``num_beams`` default to the model's own
        (``generation``), else 48 and 1."""
        max_new_tokens = max_new_tokens or self.generation.get("max_new_tokens", 48)
        num_beams = num_beams or self.generation.get("num_beams", 1)
        _check_min_confidence(min_confidence)
        if (images is None) == (audio is None):
            raise InputError("caption takes images or audio (one of them)")
        source = images if images is not None else audio
        many = isinstance(source, (list, tuple))
        items = list(source) if many else [source]
        out: list[ScoredText | None] = [None] * len(items)
        if audio is not None and listen and self.audio_processor is not None:
            items = [self.audio_processor(x) for x in items]  # decoded once, for both readers
            rate = self.audio_processor.sample_rate
            for i, clip in enumerate(items):
                said = self.caption_heard(clip, rate)
                out[i] = said.with_limit(min_confidence) if said is not None else None
        todo = [i for i, text in enumerate(out) if text is None]
        self.expect(len(todo))
        prompt = self._caption_prompt(has_image=images is not None)
        for start in range(0, len(todo), batch_size):
            chunk = [[items[i]] for i in todo[start : start + batch_size]]
            empty = [[] for _ in chunk]
            image_rows, audio_rows = (chunk, empty) if images is not None else (empty, chunk)
            sampling = SamplingConfig(max_new_tokens=max_new_tokens)
            texts = self.generate_batch(
                [prompt] * len(chunk), image_rows, audio_rows, sampling, num_beams
            )
            for i, text in zip(todo[start : start + batch_size], texts, strict=True):
                out[i] = text.with_limit(min_confidence)
        return out if many else out[0]

    def caption_heard(self, waveform: torch.Tensor, sample_rate: int) -> ScoredText | None:
        """What a decoded mono clip ``(S,)`` is heard to be before the model is asked:
        ``silence`` (no sample above ``SILENT_PEAK``: the synthetic world the model learned
        sounds from has none, so it would invent beeps), speech (``caption_speech``) or a known
        sound (``caption_known_sound``); None for anything else."""
        if waveform.numel() == 0 or float(waveform.abs().max()) < SILENT_PEAK:
            return ScoredText(SILENCE, 1.0, calibrated=False)
        said = self.caption_speech(waveform, sample_rate)
        return said if said is not None else self.caption_known_sound(waveform, sample_rate)

    def caption_speech(self, audio: Any, sample_rate: int | None = None) -> ScoredText | None:
        """``someone says: "..."`` for a clip that holds speech, with the recognizer's raw
        confidence; None for one that holds none."""
        heard = self.listener.transcribe(audio, sample_rate)
        if not heard.has_speech:
            return None
        return ScoredText(speech_caption(heard), heard.confidence, calibrated=False)

    def caption_known_sound(self, waveform: torch.Tensor, sample_rate: int) -> ScoredText | None:
        """``the sound of a frog`` for a decoded mono clip ``(S,)`` that sounds like one of the
        sound bank's, with the bank's measured precision as an uncalibrated confidence; None
        without a bank or a match."""
        if self.sound_bank is None:
            return None
        if sample_rate != SOUND_RATE:
            waveform = resample(waveform, sample_rate, SOUND_RATE)
        match = self.sound_bank.match(waveform.numpy())
        if match is None:
            return None
        return ScoredText(sound_caption(match), self.sound_bank.precision, calibrated=False)

    def transcribe(self, audio: Any, sample_rate: int | None = None) -> Any:
        """What is said in a clip (a file, bytes or samples; up to an hour): a ``Transcript``
        with ``text``, timed ``segments`` and ``confidence``; no segments when no speech is
        heard. A list in gives a list out."""
        if isinstance(audio, (list, tuple)):
            return [self.listener.transcribe(a, sample_rate) for a in audio]
        return self.listener.transcribe(audio, sample_rate)

    def stream_caption(
        self,
        image: Any = None,
        max_new_tokens: int = 48,
        audio: Any = None,
        temperature: float = 0.0,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> TextStream:
        """The caption's text piece by piece as it is generated (greedy by default); once
        iterated, the stream's ``result`` is the caption with its confidence, as ``caption``
        gives it (no second pass)."""
        if (image is None) == (audio is None):
            raise InputError("stream_caption takes an image or audio (one of them)")
        sampling = SamplingConfig(max_new_tokens, temperature, top_p=top_p, seed=seed)
        prompt = self._caption_prompt(has_image=image is not None)
        images, clips = ([image], []) if image is not None else ([], [audio])
        return TextStream(self, prompt, images, clips, sampling)

    def alt_text(
        self,
        images: Any,
        max_chars: int = 125,
        batch_size: int = 8,
        min_confidence: float | None = None,
    ) -> Any:
        """Alt text: a caption without "image of" filler, as a sentence of at most max_chars
        (a ``ScoredText``, abstained below ``min_confidence`` as in :meth:`caption`).

        A list in gives a list out (batched like :meth:`caption`)."""
        captions = self.caption(images, batch_size=batch_size, min_confidence=min_confidence)
        if isinstance(captions, list):
            return [self._alt(c, max_chars) for c in captions]
        return self._alt(captions, max_chars)

    @staticmethod
    def _alt(caption: ScoredText, max_chars: int) -> ScoredText:
        return caption.with_text(alt_text_from_caption(caption.guess, max_chars))

    def ask(
        self,
        image: Any = None,
        question: str | None = None,
        audio: Any = None,
        choices: Sequence[str] | None = None,
        n_alternatives: int = 3,
        min_confidence: float | None = None,
    ) -> Answer:
        """Answer ``question`` about an image and/or audio, with probabilities and a confidence
        (below ``min_confidence`` the answer says so instead of guessing). With ``audio`` and
        no ``question``, the clip is the question: what is said in it is asked (``Answer.question``
        keeps it)."""
        _check_min_confidence(min_confidence)
        if question is None and audio is not None:  # a spoken question
            return self._ask_spoken(image, audio, choices, n_alternatives, min_confidence)
        if question is None or not valid_text(question, "question").strip():
            raise TextError("the question is empty")
        for choice in choices or ():
            valid_text(choice, "choice")
        asked = None  # a model with a question encoder reads the question beside the picture
        if self.model.question_encoder is not None:
            asked = self.tokenizer.raw_ids(question.strip())  # as its own processor encodes it
            prompt = self.tokenizer.prompt_ids("")
            room = self.model.config.question_encoder.max_seq_len
            if image is None:
                raise InputError("this model answers questions about a picture: give an image")
        else:
            prompt = self.tokenizer.prompt_ids(question.strip())
            room = self.model.config.decoder.max_seq_len - ANSWER_ROOM
        if len(asked or prompt) > room:
            raise TextError(
                f"the question is {len(asked or prompt)} tokens long; it must fit the model's "
                f"context (at most {room} tokens with room for its answer)"
            )
        images = [image] if image is not None else []
        clips = [audio] if audio is not None else []
        media = self._media([images], [clips])
        context, evidence = self._encode(media, 1, asked)
        found = None if choices else self._read_off(question.strip(), media, evidence)
        if found is not None:  # read off the recognizers' findings
            abstained = _below(found.confidence, min_confidence)
            return replace(found, text=UNSURE if abstained else found.guess, abstained=abstained)
        if choices:
            scored = self._score(prompt, list(choices), context)
        else:
            scored = self._top_answers(prompt, context, n_alternatives + 1)
        best, *rest = scored
        found = None  # a closed answer set, or a model that reads the question: not checked
        if not choices and asked is None:
            found = self._grounded(question, best[0], media, evidence, context, 0)
        if found is not None:  # not what the recognizers found: their own answer instead
            rest = [a for a in scored if a[0] != found[0]]
            best = (found[0], float(found[1].sum().exp()))
        confidence, calibrated = self._answer_confidence(best[1], evidence)
        abstained = _below(confidence, min_confidence)
        text = UNSURE if abstained else best[0]
        return Answer(
            text,
            best[1],
            alternatives=rest[:n_alternatives],
            confidence=confidence,
            calibrated=calibrated,
            abstained=abstained,
            guess=best[0],
            question=question.strip(),
        )

    def _ask_spoken(
        self,
        image: Any,
        clip: Any,
        choices: Sequence[str] | None,
        n_alternatives: int,
        min_confidence: float | None,
    ) -> Answer:
        """``ask`` with the question said in ``clip``. Each of the listener's likeliest
        readings of it (up to ``SPOKEN_READINGS`` at each of ``TRANSCRIBE_SPEEDS``, within
        ``READING_MARGIN`` of the likeliest) is asked, and the one whose reading and answer
        are likeliest together is kept: the reading's mean token log-probability plus its
        answer's log-probability. A misreading ("what kind of is the large object?" for "what
        color ...") tends to ask something the model cannot answer surely."""
        waveform = self.listener.audio(clip)
        heard = self.listener.heard(waveform)
        if not heard.has_speech:
            raise TextError("no spoken question was heard in the audio")
        readings = self.listener.readings(waveform, SPOKEN_READINGS, TRANSCRIBE_SPEEDS)
        readings = readings or [(heard.text, 0.0)]
        readings = [r for r in readings if r[1] >= readings[0][1] - READING_MARGIN]
        best: tuple[float, Answer] | None = None
        for text, score in readings:
            try:
                answer = self.ask(image, text, None, choices, n_alternatives, min_confidence)
            except TextError:  # a reading too long for the model's context
                continue
            joint = score + math.log(max(answer.prob, 1e-12))
            if best is None or joint > best[0]:
                best = (joint, answer)
        if best is None:
            return self.ask(image, heard.text, None, choices, n_alternatives, min_confidence)
        return best[1]

    def read_off_answer(self, image: Any, question: str) -> Answer | None:
        """The answer to an existence question ("is there a dog in the picture?") or a
        counting one ("how many dogs are there?") about a photo, read off the recognizers'
        findings (``mmllm.evidence``); None where the model itself answers: another question,
        a thing the detector cannot count, a picture that is not a photo, a model that reads
        no recognizers. ``ask`` answers this way first."""
        question = valid_text(question, "question").strip()
        if self.model.recognition is None or self.media_distance is None:
            return None  # no findings to read, or no telling a photo from a synthetic scene
        counted = count_thing(question)
        countable = counted is not None and can_count(counted)  # not "how many shapes?"
        if existence_thing(question) is None and not countable:
            return None  # before encoding the picture
        media = self._media([[image]], [[]])
        _, evidence = self._encode(media, 1)
        return self._read_off(question, media, evidence)

    def _read_off(
        self, question: str, media: MediaBatch | None, evidence: _Evidence
    ) -> Answer | None:
        thing, counted = existence_thing(question), count_thing(question)
        if thing is None and counted is None:
            return None
        found = self._photo_findings(media, evidence, 0)  # one row: ask's, with one picture
        if found is None:
            return None
        rows = found.tolist()
        if thing is None:
            number = count(counted, rows)
            if number is None:
                return None  # the detector cannot count it: the model answers
            return Answer(
                str(number.count),
                number.prob,
                confidence=number.prob,
                calibrated=False,  # the detector's own scores
                guess=str(number.count),
                question=question,
                evidence=number,
            )
        found = existence(thing, rows)
        other = "no" if found.answer == "yes" else "yes"
        confidence = None
        if self.calibration is not None:
            confidence = self.calibration.existence_confidence(
                np.array([found.prob]), np.array([found.answer == "yes"]), np.array([found.known])
            )
        return Answer(
            found.answer,
            found.prob,
            alternatives=[(other, 1 - found.prob)],
            # without an existence curve: the recognizers' own scores, uncalibrated
            confidence=found.prob if confidence is None else float(confidence[0]),
            calibrated=confidence is not None,
            guess=found.answer,
            question=question,
            evidence=found,
        )

    def generate(
        self,
        prompt: str,
        images: Sequence[Any] = (),
        audio: Sequence[Any] = (),
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: Sequence[str] = (),
        seed: int | None = None,
        num_beams: int = 1,
        repetition_guard: bool = True,
        no_repeat_ngram: int = 0,
        min_confidence: float | None = None,
        raw: bool = False,
    ) -> ScoredText:
        """Free generation from a prompt with optional media (beam search if num_beams > 1),
        cut at the first stop string; a ``ScoredText`` (abstained below ``min_confidence``).
        ``raw``: continue ``prompt`` as plain text (``Tokenizer.raw_ids``), not as a prompt in
        the model's format.

        ``repetition_guard`` (on everywhere by default) never picks a token that would loop or
        glue a word to itself (``mmllm.repetition``); ``no_repeat_ngram`` > 0 also bans any
        repeated n-gram of tokens, as transformers' ``no_repeat_ngram_size``."""
        _check_min_confidence(min_confidence)
        sampling = SamplingConfig(
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            repetition_guard=repetition_guard,
            no_repeat_ngram=no_repeat_ngram,
        )
        valid_text(prompt, "prompt")
        if num_beams != 1:
            stop = [valid_text(s, "stop string") for s in stop]  # _stream checks its own
            if temperature != 0:
                raise GenerationError("beam search is deterministic: use temperature=0")
            text = self.generate_batch(
                [prompt], [list(images)], [list(audio)], sampling, num_beams, raw=raw
            )[0]
            cut = min((text.find(s) for s in stop if s and s in text), default=-1)
            return text.with_text(text.guess[:cut] if cut >= 0 else text.guess).with_limit(
                min_confidence
            )
        stream = TextStream(self, prompt, list(images), list(audio), sampling, stop, raw)
        for _ in stream:
            pass
        return stream.result.with_limit(min_confidence)

    def stream(
        self,
        prompt: str,
        images: Sequence[Any] = (),
        audio: Sequence[Any] = (),
        sampling: SamplingConfig | None = None,
        stop: Sequence[str] = (),
        raw: bool = False,
    ) -> Iterator[str]:
        """Yield generated text pieces; stops at EOS, a stop string (cut exactly), or the limit.
        ``raw``: as ``generate``'s."""
        yield from self._stream(prompt, images, audio, sampling or SamplingConfig(), stop, raw=raw)

    def _stream(
        self,
        prompt: str,
        images: Sequence[Any],
        audio: Sequence[Any],
        sampling: SamplingConfig,
        stop: Sequence[str],
        scores: _StreamScores | None = None,
        raw: bool = False,
    ) -> Iterator[str]:
        """``stream``; ``scores``, if given, collects what the text's confidence needs."""
        stop = [valid_text(s, "stop string") for s in stop]
        token_ids, mask = self._prompt_batch([prompt], raw)
        media = self._media([list(images)], [list(audio)])
        context, evidence = self._encode(media, 1)
        if scores is not None:
            scores.evidence = evidence
            scores.checked = None if raw else (prompt, media, context)
        ids: list[int] = []
        sent = ""
        tok = self.tokenizer
        steps = stream_ids(
            self.model,
            token_ids,
            mask,
            context,
            sampling,
            tok.stops,
            guard=self._guard(sampling),
            compiled=self.compiled,
        )
        for next_ids, logits in _each_in_inference_mode(steps):
            token = int(next_ids[0])
            if scores is not None:
                scores.logprobs.append(float(logits[0].float().log_softmax(-1)[token]))
            if token == tok.eos_id:
                break
            ids.append(token)
            text = self.tokenizer.decode(ids)
            cut = min((text.find(s) for s in stop if s and s in text), default=-1)
            if cut >= 0:
                if cut > len(sent):
                    yield text[len(sent) : cut]
                return
            # hold back what may still become a stop string or a multi-byte character
            safe = len(text) - _pending_stop(text, stop)
            if text.endswith("\ufffd"):
                safe = min(safe, len(text) - 1)
            if safe > len(sent):
                yield text[len(sent) : safe]
                sent = text[:safe]
        if ids:
            text = self.tokenizer.decode(ids)
            if len(text) > len(sent):
                yield text[len(sent) :]

    def _scored(self, text: str, scores: _StreamScores) -> ScoredText:
        """A streamed text with its confidence (from what ``_stream`` recorded); a photo's
        caption the recognizers' findings do not support becomes theirs (``_grounded``)."""
        features = token_features(scores.logprobs)
        if scores.checked is not None:
            prompt, media, context = scores.checked
            found = self._grounded(prompt, text, media, scores.evidence, context, 0)
            if found is not None:
                text, features = found[0], token_features(found[1].tolist())
        confidence, calibrated = self._caption_confidence(np.array([features]), scores.evidence)
        return ScoredText(text, confidence[0], calibrated, None, tuple(features))

    def plan(
        self,
        images: Sequence[Any] = (),
        audio: Sequence[Any] = (),
        prompt: str = "",
        max_new_tokens: int = 32,
    ) -> RequestPlan:
        """Media tokens and memory a request will need; limits are checked from headers."""
        return plan_request(
            self.model.config,
            list(images),
            list(audio),
            prompt_tokens=len(self.tokenizer.prompt_ids(prompt)),
            max_new_tokens=max_new_tokens,
            n_parameters=sum(p.numel() for p in self.model.parameters()),
            truncate=self.truncate_audio,
        )

    def generate_batch(
        self,
        prompts: Sequence[str],
        images: Sequence[Sequence[Any]],
        audio: Sequence[Sequence[Any]] | None,
        sampling: SamplingConfig,
        num_beams: int = 1,
        raw: bool = False,
    ) -> list[ScoredText]:
        """One ``ScoredText`` per prompt, generated with its row's images and audio (lists,
        possibly empty; ``audio`` None: none): the batched generation the tasks and the
        evaluation share. ``raw``: as ``generate``'s."""
        token_ids, mask = self._prompt_batch(prompts, raw)
        media = self._media(images, audio or [[] for _ in prompts])
        tok = self.tokenizer
        logprobs = torch.zeros(len(prompts), sampling.max_new_tokens, device=self.device)
        with torch.inference_mode():
            context, evidence = self._encode(media, len(prompts))
            if num_beams == 1:
                new = self._generate(token_ids, mask, context, sampling, logprobs)
            else:
                new = beam_search_ids(
                    self.model,
                    token_ids,
                    mask,
                    context,
                    tok.stops,
                    num_beams=num_beams,
                    max_new_tokens=sampling.max_new_tokens,
                    guard=self._guard(sampling),
                    logprobs=logprobs,
                )
        texts, features = [], []
        for ids, logp in zip(new.tolist(), logprobs.tolist(), strict=True):
            n = ids.index(tok.eos_id) + 1 if tok.eos_id in ids else len(ids)
            features.append(token_features(logp[:n]))
            texts.append(tok.decode(ids))
        if not raw:
            for row, prompt in enumerate(prompts):
                found = self._grounded(prompt, texts[row], media, evidence, context, row)
                if found is not None:  # the findings' words, scored by the decoder
                    texts[row], features[row] = found[0], token_features(found[1].tolist())
        confidence, calibrated = self._caption_confidence(np.array(features), evidence)
        return [
            ScoredText(text, c, calibrated, token_scores=tuple(f))
            for text, c, f in zip(texts, confidence, features, strict=True)
        ]

    def _grounded(
        self,
        prompt: str,
        text: str,
        media: MediaBatch | None,
        evidence: _Evidence,
        context: MediaContext | None,
        row: int,
    ) -> tuple[str, torch.Tensor] | None:
        """Batch row ``row``'s ``text`` checked against the recognizers' findings
        (``mmllm.grounding``) where it is a photo's caption or its answer to "what is this?"
        (``prompt``): None when it is grounded (or nothing is checked), else the findings' own
        words with their token log-probabilities under the decoder, EOS included."""
        if prompt == self._caption_prompt(has_image=True):
            task = "caption"
        elif asks_what_it_is(prompt):
            task = "answer"
        else:
            return None
        found = self._photo_findings(media, evidence, row)
        if found is None:
            return None
        own = grounded_text(text, found, task)
        if own is None:
            return None
        picked = context.select(torch.tensor([row], device=self.device))
        ids = self.tokenizer.encode(own)
        return own, self._token_logprobs(self.tokenizer.prompt_ids(prompt), [ids], picked)[0]

    def _photo_findings(
        self, media: MediaBatch | None, evidence: _Evidence, row: int
    ) -> np.ndarray | None:
        """The recognition rows ``(K, 6)`` of batch row ``row``'s one picture where that
        picture is a photo (``MediaDistance.assign``); else None."""
        if (
            media is None
            or media.recognitions is None
            or media.image_index is None
            or evidence.kinds[row] != PHOTO
        ):
            return None
        mine = (media.image_index == row).nonzero().flatten().tolist()
        if len(mine) != 1:
            return None
        j = mine[0]
        return media.recognitions[j][media.recognition_mask[j]].float().cpu().numpy()

    # -- internals ---------------------------------------------------------------------------
    def _caption_prompt(self, has_image: bool) -> str:
        """What a caption is asked with: the model's own (an imported captioner's), else ours."""
        own = self.tokenizer.caption_prompt
        return own if own is not None else caption_prompt(has_image)

    def _media(self, images: list[list[Any]], audio: list[list[Any]]) -> MediaBatch | None:
        if not any(images) and not any(audio):
            return None
        for row_images, row_audio in zip(images, audio, strict=True):  # limits, from headers
            plan_request(self.model.config, row_images, row_audio, truncate=self.truncate_audio)
        batch = self.media_processor(images, audio)
        return batch.to(self.device, dtype=self.model.decoder.embed_tokens.weight.dtype)

    def _prompt_batch(
        self, prompts: Sequence[str], raw: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts as left-padded ids ``(B, T)`` and their mask ``(B, T)``."""
        tok = self.tokenizer
        rows = [tok.raw_ids(p) if raw else tok.prompt_ids(p) for p in prompts]
        if not all(rows):
            raise TextError("the prompt is empty: a plain continuation needs some text")
        ids, mask = left_pad(rows, tok.pad_id)
        return ids.to(self.device), mask.to(self.device)

    def _guard(self, sampling: SamplingConfig):
        tok = self.tokenizer
        return sampling.guard(tok.decode, (tok.eos_id, tok.pad_id))

    def _generate(
        self, token_ids, mask, context, sampling: SamplingConfig, logprobs=None
    ) -> torch.Tensor:
        return generate_ids(
            self.model,
            token_ids,
            mask,
            context,
            sampling,
            self.tokenizer.stops,
            guard=self._guard(sampling),
            logprobs=logprobs,
            compiled=self.compiled,
        )

    def _encode(self, media: MediaBatch | None, rows: int, question: list[int] | None = None):
        """Encode media once for a request (under bf16 autocast on CUDA): the cross-attention
        context, and what a confidence reads of each row's media (:class:`_Evidence`).
        ``question``: the question's ids, for a model with a question encoder (one row)."""
        distance, recognized = np.zeros(rows), recognition_features(media, rows)
        if media is None or media.is_empty:
            return None, _Evidence(distance, [None] * rows, recognized)
        if self.model.question_encoder is not None and question is None:
            raise InputError(
                "this model answers questions about a picture (a VQA model); it does not "
                "caption: use ask"
            )
        with torch.inference_mode(), autocast_for(self.device):
            tokens, mask = self.model.encode_media(media, self.compiled)
            if question is None:
                context = self.model.context_for(tokens, mask, media)
            else:
                ids = torch.tensor([question], device=tokens.device)
                context = self.model.question_context(tokens, mask, ids)
        has_image = torch.zeros(rows, dtype=torch.bool)
        has_audio = torch.zeros(rows, dtype=torch.bool)
        if media.image_index is not None:
            has_image[media.image_index.cpu()] = True
        if media.audio_index is not None:
            has_audio[media.audio_index.cpu()] = True
        kinds = [media_kind(bool(i), bool(a)) for i, a in zip(has_image, has_audio, strict=True)]
        if self.media_distance is not None:
            pooled = pooled_tokens(tokens.float(), mask)
            found, kinds = self.media_distance.assign(pooled, kinds)
            distance = found.numpy()
        return context, _Evidence(distance, kinds, recognized)

    def _caption_confidence(self, features: np.ndarray, evidence: _Evidence):
        """Token features ``(n, 2)`` and what ``_encode`` found -> confidences, and whether
        they are calibrated."""
        if self.calibration is None:
            return np.exp(features[:, 0]).tolist(), False
        confidence = self.calibration.caption_confidence(features, *evidence.parts())
        return confidence.tolist(), True

    def _answer_confidence(self, prob: float, evidence: _Evidence) -> tuple[float, bool]:
        """An answer's probability and what ``_encode`` found -> its confidence, and whether
        it is calibrated."""
        if self.calibration is None:
            return prob, False
        confidence = self.calibration.answer_confidence(np.array([prob]), *evidence.parts())
        return float(confidence[0]), True

    def _sequence_logprob(
        self, prompt: list[int], answers: list[list[int]], context: MediaContext | None
    ) -> torch.Tensor:
        """log P(answer + EOS | media, prompt) for each answer: ``(n,)`` (``context``: the
        request's encoded media, ``_encode``)."""
        return torch.stack([t.sum() for t in self._token_logprobs(prompt, answers, context)])

    @torch.inference_mode()
    def _token_logprobs(
        self, prompt: list[int], answers: list[list[int]], context: MediaContext | None
    ) -> list[torch.Tensor]:
        """Each answer's token log-probabilities, EOS included, ``(len(answer) + 1,)``, after
        ``prompt`` with the media of ``context``'s first row."""
        rows = [prompt + a + [self.tokenizer.eos_id] for a in answers]
        longest = max(len(r) for r in rows)
        limit = self.model.config.decoder.max_seq_len
        if longest > limit:
            raise TextError(
                f"the question and an answer are {longest} tokens, over the model's context of "
                f"{limit} tokens"
            )
        token_ids = torch.full((len(rows), longest), self.tokenizer.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            token_ids[i, : len(r)] = torch.tensor(r)
        token_ids = token_ids.to(self.device)
        if context is not None:
            context = context.select(torch.zeros(len(rows), dtype=torch.long, device=self.device))
        with autocast_for(self.device):
            logits = self.model.decoder(token_ids, context)
        logprobs = logits.float().log_softmax(-1)
        scores = []
        for i, r in enumerate(rows):
            positions = torch.arange(len(prompt) - 1, len(r) - 1, device=self.device)
            targets = token_ids[i, len(prompt) : len(r)]
            scores.append(logprobs[i, positions, targets])
        return scores

    def _score(self, prompt, choices: list[str], context) -> list[tuple[str, float]]:
        """Closed answer set: each choice's share of the probability mass over the choices."""
        logp = self._sequence_logprob(prompt, [self.tokenizer.encode(c) for c in choices], context)
        probs = logp.softmax(0).tolist()
        return sorted(zip(choices, probs, strict=True), key=lambda x: -x[1])

    def _top_answers(self, prompt, context, k: int) -> list[tuple[str, float]]:
        """Greedy completions of the k most likely first tokens, with sequence probabilities."""
        token_ids = torch.tensor([prompt], device=self.device)
        with torch.inference_mode(), autocast_for(self.device):
            first = self.model.decoder(token_ids, context)[0, -1].float().softmax(-1)
        starts = first.topk(min(k, first.shape[0])).indices.tolist()
        starts = [t for t in starts if t != self.tokenizer.eos_id] or starts
        prompts = token_ids.expand(len(starts), -1)
        rows = torch.zeros(len(starts), dtype=torch.long, device=self.device)
        sub = context.select(rows) if context is not None else None
        seeded = torch.cat([prompts, torch.tensor(starts, device=self.device)[:, None]], 1)
        seeded_mask = torch.ones_like(seeded, dtype=torch.bool)
        rest = self._generate(
            seeded, seeded_mask, sub, SamplingConfig(max_new_tokens=ANSWER_TOKENS)
        )
        answers = []
        for s, tail in zip(starts, rest.tolist(), strict=True):
            ids = [s] + [t for t in tail if t not in (self.tokenizer.eos_id, self.tokenizer.pad_id)]
            answers.append(ids)
        logp = self._sequence_logprob(prompt, answers, context)
        texts = [self.tokenizer.decode(a).strip() for a in answers]
        best: dict[str, float] = {}
        for text, p in zip(texts, logp.exp().tolist(), strict=True):
            best[text] = max(best.get(text, 0.0), p)
        return sorted(best.items(), key=lambda x: -x[1])


def _each_in_inference_mode(steps: Iterator[Any]) -> Iterator[Any]:
    """Advance ``steps`` one item at a time under ``torch.inference_mode``, never holding the
    mode across a ``yield``: it is thread-local, and a consumer such as a web server may resume
    a stream on another thread (the mode would be missing there and leak into the caller here)."""
    while True:
        with torch.inference_mode():
            item = next(steps, _DONE)
        if item is _DONE:
            return
        yield item


_DONE = object()


class TextStream:
    """A text as it is generated, an iterator of its pieces; once exhausted, ``result`` is
    the whole text as a ``ScoredText`` with its confidence."""

    def __init__(
        self,
        api: MMLLM,
        prompt: str,
        images: Sequence[Any],
        audio: Sequence[Any],
        sampling: SamplingConfig,
        stop: Sequence[str] = (),
        raw: bool = False,
    ):
        self._pieces = self._generate(api, prompt, list(images), list(audio), sampling, stop, raw)
        self.result: ScoredText | None = None

    def _generate(self, api, prompt, images, audio, sampling, stop, raw) -> Iterator[str]:
        scores, pieces = _StreamScores(), []
        for piece in api._stream(prompt, images, audio, sampling, stop, scores, raw):
            pieces.append(piece)
            yield piece
        self.result = api._scored("".join(pieces), scores)

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)


@dataclass
class _Evidence:
    """What a confidence reads of each row's media (``MMLLM._encode``): the distance from the
    model's training inputs ``(n,)`` (``MediaDistance``; 0 without one), the kind of input
    (``media_kind``, ``MediaDistance.assign``) and how sure the recognizers were ``(n, 2)``
    (``recognition_features``)."""

    distance: np.ndarray
    kinds: list[str | None]
    recognized: np.ndarray

    def parts(self) -> tuple[np.ndarray, list[str | None], np.ndarray]:
        """In the order ``Calibration``'s confidences take them."""
        return self.distance, self.kinds, self.recognized


@dataclass
class _StreamScores:
    """What ``MMLLM._stream`` records for a confidence: each picked token's log-probability
    (EOS included), what ``_encode`` found of the media, and what checking the text against
    the recognizers' findings needs (its prompt, media and context; None for raw text)."""

    logprobs: list[float] = field(default_factory=list)
    evidence: _Evidence = field(
        default_factory=lambda: _Evidence(np.zeros(1), [None], np.zeros((1, 2)))
    )
    checked: tuple[str, MediaBatch | None, MediaContext | None] | None = None  # for _grounded


def _below(confidence: float, min_confidence: float | None) -> bool:
    """Whether an output of ``confidence`` abstains under ``min_confidence`` (None: never)."""
    return min_confidence is not None and confidence < min_confidence


def _check_min_confidence(value: float | None) -> None:
    if value is not None and not 0 <= value <= 1:
        raise InputError(f"min_confidence must be between 0 and 1, got {value!r}")


def alt_text_from_caption(caption: str, max_chars: int = 125) -> str:
    """A caption as alt text: no "image of" filler, capitalised, one line of <= max_chars."""
    text = "".join(c for c in " ".join(caption.split()) if c.isprintable())
    text = FILLER.sub("", text)
    text = text[:1].upper() + text[1:]
    if len(text) > max_chars - 1:
        text = text[: max_chars - 1].rsplit(" ", 1)[0].rstrip(",;:")
    return text if text.endswith(".") else text + "."


def _pending_stop(text: str, stop: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that begins some stop string (0 if none)."""
    best = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best
