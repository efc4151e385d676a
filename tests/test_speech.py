"""Speech: Whisper tiny.en in CTranslate2 (``encoders.speech``), transcripts, speech captions,
spoken questions and the ``transcribe`` CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import mmllm
from encoders.speech import SAMPLE_RATE, SpeechRecognizer, compression_ratio, cut_runaway
from mmllm.cli import main
from mmllm.errors import TextError
from mmllm.speech import TRANSCRIBE_SPEEDS, Listener, speech_caption

EXAMPLES = Path(__file__).resolve().parent.parent / "demos" / "examples"
QUESTION = EXAMPLES / "question.wav"  # espeak-ng: "What color is the circle?"


@pytest.fixture(scope="module")
def listener():
    return Listener(SpeechRecognizer(threads=2, speeds=TRANSCRIBE_SPEEDS))  # as the tasks make it


def words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalpha() or c == " ").split()


def test_a_spoken_question_is_written_down_with_its_time(listener):
    transcript = listener.transcribe(QUESTION)
    assert words(transcript.text) == ["what", "color", "is", "the", "circle"]
    assert transcript.has_speech and 0.0 < transcript.confidence <= 1.0
    first, last = transcript.segments[0], transcript.segments[-1]
    assert 0.0 <= first.start < last.end <= transcript.seconds + 0.5


@pytest.mark.parametrize("kind", ["silence", "white noise", "tone", "chirp", "beeps"])
def test_audio_without_speech_gives_no_words(listener, kind):
    """Whisper tiny.en alone writes "You" over silence, "Beep Beep Beep..." over a 5 s tone
    and "Ooooh..." over a chirp."""
    rng = np.random.default_rng(0)
    t = np.arange(5 * SAMPLE_RATE) / SAMPLE_RATE
    clips = {
        "silence": np.zeros_like(t),
        "white noise": 0.1 * rng.standard_normal(t.shape),
        "tone": 0.5 * np.sin(2 * math.pi * 440 * t),
        "chirp": 0.5 * np.sin(2 * math.pi * (200 + 400 * t) * t),
    }
    if kind == "beeps":
        transcript = listener.transcribe(EXAMPLES / "beeps.wav")
    else:
        transcript = listener.heard(torch.tensor(clips[kind], dtype=torch.float32))
    assert transcript.text == "" and not transcript.has_speech and transcript.segments == ()


def test_a_long_clip_is_read_window_after_window(listener):
    """75 s: the question every 5 s. Every window is read, none twice, times keep rising."""
    speech, rate = sf.read(QUESTION, dtype="float32")
    assert rate == SAMPLE_RATE
    slot = np.zeros(5 * SAMPLE_RATE, dtype=np.float32)
    slot[: len(speech)] = speech
    transcript = listener.heard(torch.from_numpy(np.tile(slot, 15)))
    said = words(transcript.text)
    assert said.count("circle") == 15, transcript.text
    assert len(transcript.windows) >= 3
    starts = [s.start for s in transcript.segments]
    assert starts == sorted(starts) and transcript.segments[-1].end <= 75.5


def test_repetitive_text_compresses_well():
    assert compression_ratio("no " * 100) > 2.4 > compression_ratio("What color is the circle?")


def test_a_speech_caption_quotes_what_is_said_and_cuts_long_speech(listener):
    transcript = listener.transcribe(QUESTION)
    assert speech_caption(transcript) == 'someone says: "What color is the circle?"'
    long = speech_caption(transcript, max_chars=12)
    assert long.startswith('someone says: "What color') and long.endswith('..."')


@pytest.fixture(scope="module")
def api(tiny_checkpoint, listener):
    model = mmllm.load(tiny_checkpoint, device="cpu")
    model.listener = listener
    return model


def test_caption_of_speech_says_what_is_said_and_of_sounds_describes_them(api):
    spoken, beeps = api.caption(audio=[QUESTION, EXAMPLES / "beeps.wav"], max_new_tokens=6)
    assert spoken == 'someone says: "What color is the circle?"' and spoken.confidence > 0
    assert not beeps.startswith("someone says")  # the model's own sound caption
    heard_only_as_sound = api.caption(audio=QUESTION, listen=False, max_new_tokens=6)
    assert not heard_only_as_sound.startswith("someone says")


def test_a_spoken_question_about_a_picture_is_the_same_as_the_typed_one(api):
    image = EXAMPLES / "shapes1.png"
    spoken = api.ask(image, audio=QUESTION)
    typed = api.ask(image, "What color is the circle?")
    assert spoken.question == "What color is the circle?"
    assert (spoken.text, spoken.prob) == (typed.text, pytest.approx(typed.prob))


def test_a_short_clip_has_several_readings_the_first_the_transcript(listener):
    speech, _ = sf.read(QUESTION, dtype="float32")
    readings = listener.readings(torch.from_numpy(speech), 5)
    assert readings[0][0] == listener.transcribe(QUESTION).text == "What color is the circle?"
    assert 2 <= len(readings) <= 5 and len({text for text, _ in readings}) == len(readings)
    scores = [score for _, score in readings]
    assert scores == sorted(scores, reverse=True) and all(s < 0 for s in scores)
    assert listener.readings(torch.zeros(31 * SAMPLE_RATE), 5) == []  # over one window


def test_readings_at_several_speeds_are_pooled(listener):
    """The clip read as played at 0.9 and 1.1 too: one pool, each text once with its best
    score, likeliest first; what the clip at its own speed gives is in it, as likely or more."""
    speech = torch.from_numpy(sf.read(QUESTION, dtype="float32")[0])
    alone = dict(listener.readings(speech, 5))
    pooled = listener.readings(speech, 5, (1.0, 0.9, 1.1))
    texts = [text for text, _ in pooled]
    assert len(texts) == len(set(texts)) and len(pooled) <= 15
    assert [s for _, s in pooled] == sorted((s for _, s in pooled), reverse=True)
    assert pooled[0][0] == "What color is the circle?"
    for text, score in alone.items():  # batched with the other speeds: the same within int8
        assert dict(pooled)[text] >= score - 1e-3
    assert len(pooled) > len(alone)  # the other speeds add readings of their own
    long = torch.cat([speech, torch.zeros(28 * SAMPLE_RATE - speech.shape[0])])
    assert listener.readings(long, 5, (0.9,)) == []  # slowed, it would not fit one window
    assert listener.readings(long, 5, (1.0, 0.9))[0][0] == "What color is the circle?"


def test_a_spoken_question_is_read_as_the_reading_the_model_answers_surely(api, monkeypatch):
    """The likeliest reading and answer together win: a slightly likelier misreading that
    asks nothing the model can answer surely loses to the question it can."""
    from mmllm.tasks import MMLLM, Answer

    misread, meant = "what kind of is the circle?", "what color is the circle?"
    sureness = {misread: 0.05, meant: 0.9}  # the model's answer probabilities (stubbed)

    def ask(image=None, question=None, audio=None, *args, **kwargs):
        if question is None:  # the spoken question itself: the real code
            return MMLLM.ask(api, image, question, audio, *args, **kwargs)
        return Answer("red", sureness[question], question=question)

    readings = [(misread, -0.2), (meant, -0.4)]
    monkeypatch.setattr(api, "ask", ask)
    monkeypatch.setattr(api.listener, "readings", lambda waveform, n, speeds: readings[:n])
    spoken = api.ask(EXAMPLES / "shapes1.png", audio=QUESTION)
    assert (spoken.question, spoken.prob) == (meant, 0.9)
    readings[1] = (meant, -9.0)  # a reading the recognizer finds very unlikely is not taken
    assert api.ask(EXAMPLES / "shapes1.png", audio=QUESTION).question == misread


def test_a_clip_without_speech_is_no_question(api):
    with pytest.raises(TextError, match="no spoken question"):
        api.ask(EXAMPLES / "shapes1.png", audio=EXAMPLES / "beeps.wav")


def test_the_transcribe_command_reports_text_times_and_real_time_factor(capsys, tmp_path):
    noise = tmp_path / "noise.wav"
    sf.write(noise, 0.1 * np.random.default_rng(1).standard_normal(SAMPLE_RATE), SAMPLE_RATE)
    assert main(["transcribe", str(QUESTION), str(noise), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["text"] == "What color is the circle?" and rows[0]["speech"]
    assert rows[0]["segments"] and rows[0]["real_time_factor"] > 0
    assert rows[1]["text"] == "" and not rows[1]["speech"]
    assert main(["transcribe", str(tmp_path / "missing.wav")]) == 2


def write_adapter(path: Path, factors: dict[str, torch.Tensor], scale: float) -> Path:
    from safetensors.torch import save_file

    save_file(factors, str(path), metadata={"scale": str(scale)})
    return path


def test_an_adapter_adds_its_low_rank_update_to_the_fused_rows(tmp_path, monkeypatch):
    """k of the self-attention is the middle third of CTranslate2's fused q/k/v tensor."""
    from encoders.ctranslate2 import read_ctranslate2
    from encoders.speech import whisper_folder
    from encoders.speech_adapter import adapted_model_folder

    monkeypatch.setenv("MMLLM_CACHE", str(tmp_path / "cache"))
    a, b = torch.randn(4, 384) * 0.1, torch.randn(384, 4) * 0.1
    name = "decoder.layers.1.self_attn.k_proj"
    adapter = write_adapter(
        tmp_path / "a.safetensors", {f"{name}.lora_a": a, f"{name}.lora_b": b}, 2.0
    )
    base = whisper_folder()
    folder = adapted_model_folder(base, adapter)
    assert folder.parent == tmp_path / "cache" and adapted_model_folder(base, adapter) == folder
    before = read_ctranslate2(base / "model.bin")
    after = read_ctranslate2(folder / "model.bin")
    key = "decoder/layer_1/self_attention/linear_0/weight"
    expected = before[key].float()
    expected[384:768] += 2.0 * b @ a
    torch.testing.assert_close(after[key].float(), expected, atol=2e-3, rtol=0)
    assert torch.equal(after[key][:384], before[key][:384])
    assert all(torch.equal(after[k], before[k]) for k in before if k != key)


def test_a_zero_adapter_hears_exactly_as_the_base_model(tmp_path, monkeypatch, listener):
    monkeypatch.setenv("MMLLM_CACHE", str(tmp_path / "cache"))
    name = "decoder.layers.0.fc1"
    zero = {f"{name}.lora_a": torch.randn(4, 384), f"{name}.lora_b": torch.zeros(1536, 4)}
    adapted = Listener(adapter=write_adapter(tmp_path / "z.safetensors", zero, 1.0))
    for clip in (QUESTION, EXAMPLES / "beeps.wav"):
        assert adapted.transcribe(clip).windows == listener.transcribe(clip).windows


def test_the_default_model_hears_through_its_shipped_adapter(tmp_path, monkeypatch):
    from mmllm.tasks import resolve_checkpoint

    monkeypatch.setenv("MMLLM_CACHE", str(tmp_path))
    listener = Listener.of_checkpoint(resolve_checkpoint(None))
    assert listener.adapter is not None and listener.adapter.name == "speech_adapter.safetensors"
    assert listener.transcribe(QUESTION).text == "What color is the circle?"
    assert listener.transcribe(EXAMPLES / "beeps.wav").text == ""
    assert any(tmp_path.glob("whisper-*/model.bin"))  # merged once, into the cache


def test_a_runaway_loop_is_cut_after_its_first_copy_and_a_repeated_sentence_kept():
    """A reading ending in a loop of a short piece ("们们们...", seen from an over-trained
    adapter on a real recording) keeps what came before and the piece once."""
    said = [11, 12, 13]
    kept, cut = cut_runaway(said + [7] * 60)
    assert cut and kept == [*said, 7]
    kept, cut = cut_runaway(said + [5, 6] * 20)
    assert cut and kept == [*said, 5, 6]
    question = [21, 22, 23, 24, 25, 26, 27]  # a sentence said again and again: kept
    assert cut_runaway(question * 6) == (question * 6, False)
    assert cut_runaway(said + [9] * 3) == (said + [9] * 3, False)  # "no, no, no" is speech


def test_a_short_clip_is_read_at_three_speeds_and_its_times_are_the_clips(listener):
    """The likeliest of the clip's readings at 1.0, 0.9 and 1.1 times its speed is kept, with
    the segment times of the clip itself; a clip read at its own speed only says the same."""
    speech = torch.from_numpy(sf.read(QUESTION, dtype="float32")[0])
    padded = torch.cat([torch.zeros(SAMPLE_RATE), speech, torch.zeros(SAMPLE_RATE)])
    heard = listener.heard(padded)
    seconds = padded.shape[0] / SAMPLE_RATE
    assert heard.text == "What color is the circle?" and heard.windows[0]["speed"] in (
        1.0,
        0.9,
        1.1,
    )
    (segment,) = heard.segments
    assert 0 <= segment.start < 1.5 and 1.5 < segment.end <= seconds + 1e-6  # speech: 1-2.8 s
    alone = Listener(SpeechRecognizer(threads=2)).heard(padded)  # one speed
    assert alone.text == heard.text and alone.windows[0]["speed"] == 1.0
    assert heard.windows[0]["logprob"] >= alone.windows[0]["logprob"] - 1e-3  # the likeliest
