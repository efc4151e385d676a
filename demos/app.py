"""The mmllm Gradio demo: captions, alt text and answers for images and sounds, streamed.

    mmllm demo                                   # http://127.0.0.1:7860, checkpoints/ listed
    mmllm demo --checkpoint runs/mine/checkpoint --port 8000
    python demos/app.py --help                   # the same command

Safe by default: it binds 127.0.0.1 (``--host 0.0.0.0`` to serve a network), never makes a share
link, sends no analytics, refuses uploads over ``--max-file-size``, runs at most
``--concurrency`` requests at once with at most ``--queue-size`` waiting (more are refused at
once), and shows failures as one short line (the message of a typed ``mmllm.errors`` error,
server paths removed), never a traceback. Only the public API is used: ``mmllm.load``,
``MMLLM.stream_caption`` / ``ask``, ``alt_text_from_caption``.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no telemetry

import atexit
import logging
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

import mmllm
from mmllm.cli import main as mmllm_main
from mmllm.data.synthetic import SAMPLE_RATE, SyntheticWorld
from mmllm.errors import CheckpointError, InputError, MMLLMError, TextError
from mmllm.tasks import (
    DEFAULT_CHECKPOINT,
    alt_text_from_caption,
    checkpoint_dirs,
    resolve_checkpoint,
)

log = logging.getLogger("mmllm.demo")

MODES = ("Caption", "Alt text", "Ask")
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_CONCURRENCY = 2  # requests running at once (each one is a model call)
DEFAULT_QUEUE_SIZE = 16  # requests waiting; more are refused at once with "queue is full"
DEFAULT_MAX_FILE_SIZE = "10mb"
TIME_LIMIT_S = 120  # one request's wall-clock limit
MAX_MESSAGE_CHARS = 300
# an absolute path (POSIX or Windows); the part before the last separator is cut from messages
_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?(?:[\\/][^\s'\"\\/:<>|]+)+[\\/](?=[^\s'\"\\/]+)")

Loader = Callable[[str], Any]


# ---------------------------------------------------------------- checkpoints and models


def find_checkpoints(extra: Sequence[str | Path] = ()) -> dict[str, str]:
    """Display name -> folder: those passed (first, in order), then those in ``checkpoints/``.

    A passed entry is a folder or the bare name of a shipped checkpoint; one that is neither
    raises :class:`CheckpointError`.
    """

    found: dict[str, str] = {}
    seen: set[Path] = set()

    def add(folder: Path) -> None:
        real = folder.resolve()
        if real in seen:
            return
        seen.add(real)
        name = folder.name
        if name in found:
            name = f"{folder.parent.name}/{folder.name}"
        while name in found:
            name += "'"
        found[name] = str(folder)

    for item in extra:
        folder = resolve_checkpoint(item)
        if not (folder / "config.json").is_file():
            raise CheckpointError(f"checkpoint folder {folder.name!r} has no config.json")
        add(folder)
    for root in checkpoint_dirs():
        if root.is_dir():  # the shipped default first, then the others by name
            folders = sorted(root.iterdir(), key=lambda f: (f.name != DEFAULT_CHECKPOINT, f.name))
            for folder in folders:
                if (folder / "config.json").is_file():
                    add(folder)
    return found


class ModelCache:
    """Checkpoints loaded on first use and kept; one load at a time. Each model is told how
    many requests it has served (``MMLLM.expect``), so a long-lived server compiles its
    decoding once its traffic pays for the compile (unless loaded with ``compile=False``)."""

    def __init__(self, checkpoints: dict[str, str], loader: Loader):
        self.checkpoints = dict(checkpoints)
        self.loader = loader
        self._models: dict[str, Any] = {}
        self._served: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Any:
        if name not in self.checkpoints:
            raise CheckpointError(f"unknown checkpoint {name!r}; choose one from the list")
        with self._lock:
            if name not in self._models:
                self._models[name] = self.loader(self.checkpoints[name])
            model = self._models[name]
            self._served[name] = self._served.get(name, 0) + 1
            if hasattr(model, "expect"):
                model.expect(self._served[name])
            return model


# ---------------------------------------------------------------- examples


def make_examples(folder: Path, n_synthetic: int = 2) -> list[list[Any]]:
    """Example rows ``[image, audio, mode, question]``: the shipped files in demos/examples and a
    few fresh scenes and clips from the synthetic world (with their own questions), in ``folder``.
    """
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rows: list[list[Any]] = []
    for src in sorted(EXAMPLES_DIR.glob("*")):
        if src.suffix.lower() not in (".png", ".jpg", ".wav"):
            continue
        dst = folder / src.name
        shutil.copyfile(src, dst)
        if src.suffix.lower() == ".jpg":  # real photos: a caption and a question
            rows.append([str(dst), None, "Caption", ""])
            rows.append([str(dst), None, "Ask", "what is in the picture?"])
        elif src.suffix.lower() == ".png":
            rows.append([str(dst), None, "Caption", ""])
        else:
            rows.append([None, str(dst), "Caption", ""])
            rows.append([None, str(dst), "Ask", "how many beeps are there?"])
    mix = {"image_vqa": 1.0, "audio_vqa": 1.0}
    world = SyntheticWorld("heldout", seed=2024, image_size=128, task_mix=mix, length=64)
    wanted = {"image": n_synthetic, "audio": 1}
    for i in range(len(world)):
        if not any(wanted.values()):
            break
        ex = world[i]
        if ex.category not in wanted or not wanted[ex.category] or ex.task != "vqa":
            continue
        if ex.category == "image" and ex.audio is None and ex.image is not None:
            path = folder / f"synthetic-{i}.png"
            ex.image.save(path)
            rows.append([str(path), None, "Ask", ex.prompt])
        elif ex.category == "audio" and ex.image is None and ex.audio is not None:
            path = folder / f"synthetic-{i}.wav"
            sf.write(path, ex.audio, SAMPLE_RATE, subtype="PCM_16")
            rows.append([None, str(path), "Ask", ex.prompt])
        else:
            continue
        wanted[ex.category] -= 1
    rows.sort(key=lambda row: row[0] is None)  # images first, then sounds
    return rows


# ---------------------------------------------------------------- requests


def safe_message(err: BaseException, paths: Sequence[str | None] = ()) -> str:
    """One short line for the user: the error's message, server folders cut from paths."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    for path in paths:
        if path:
            text = text.replace(str(path), Path(path).name)
    text = _PATH.sub("", text)
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 3] + "..."
    return text


def parse_choices(text: str | None) -> list[str] | None:
    """``"yes, no"`` -> ``["yes", "no"]``; empty -> None (open answer)."""
    choices = [c.strip() for c in (text or "").split(",") if c.strip()]
    return choices or None


def respond(
    models: ModelCache,
    checkpoint: str,
    mode: str,
    image: str | None,
    audio: str | None,
    question: str,
    choices: str,
    max_new_tokens: float,
    temperature: float,
    top_p: float,
    max_chars: float,
    spoken: str | None = None,
) -> Iterator[tuple[str, dict[str, float] | None, str]]:
    """One request: yields ``(text so far, answer probabilities or None, confidence line)``.
    ``spoken``: a recording of the question (Ask mode, when no question is typed).

    Every failure becomes a ``gr.Error`` with one short line; nothing else reaches the user.
    """
    try:
        yield from _respond(
            models,
            checkpoint,
            mode,
            image,
            audio,
            question,
            choices,
            int(max_new_tokens),
            float(temperature),
            float(top_p),
            int(max_chars),
            spoken,
        )
    except gr.Error:
        raise
    except MMLLMError as err:
        raise gr.Error(safe_message(err, [image, audio, spoken]), print_exception=False) from None
    except Exception:  # a bug, not the user's fault: logged here, a plain line there
        log.exception("request failed")
        raise gr.Error(
            "the server failed on this request (logged); try again", print_exception=False
        ) from None


def _respond(
    models: ModelCache,
    checkpoint: str,
    mode: str,
    image: str | None,
    audio: str | None,
    question: str,
    choices: str,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    max_chars: int,
    spoken: str | None,
) -> Iterator[tuple[str, dict[str, float] | None, str]]:
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if image is None and audio is None:
        raise InputError("upload an image or a sound first (or click an example)")
    if mode == "Ask":
        heard = ""
        model = models.get(checkpoint)
        if not (question or "").strip():
            if spoken is None:
                raise TextError("type a question or record one first")
            transcript = model.transcribe(spoken)
            if not transcript.has_speech:
                raise TextError("no question was heard in the recording; record it again")
            question = heard = transcript.text
        answer = model.ask(image, question, audio=audio, choices=parse_choices(choices))
        probs = {answer.text: answer.prob}
        for text, prob in answer.alternatives:
            probs.setdefault(text, prob)
        line = confidence_line(answer, model)
        yield answer.text, probs, (f'Heard: "{heard}"\n\n' + line) if heard else line
        return
    if mode == "Alt text" and image is None:
        raise InputError("alt text is for images: upload an image")
    model = models.get(checkpoint)
    sampling = {
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p if temperature > 0 else None,
    }
    sources = [("image", image, None)] if image is not None else []
    if audio is not None and mode == "Caption":
        sources.append(("sound", None, audio))
    done, lines = "", []
    for kind, img, clip in sources:
        head = f"{kind}: " if len(sources) > 1 else ""
        said = model.caption_speech(clip) if clip is not None else None
        if said is not None:  # speech: what is said, not how it sounds
            done += head + said + "\n"
            lines.append(head + f"Confidence {said.confidence:.2f} (speech recognizer)")
            yield done.rstrip("\n"), None, "\n\n".join(lines)
            continue
        text = ""
        stream = model.stream_caption(img, audio=clip, **sampling)
        for piece in stream:
            text += piece
            yield done + head + text, None, ""
        text = stream.result.guess  # a photo's caption is checked once whole (mmllm.grounding)
        if mode == "Alt text":
            text = alt_text_from_caption(text, max_chars)
        done += head + text.strip() + "\n"
        if temperature == 0:  # greedy: the caption's calibrated confidence, from the stream
            lines.append(head + confidence_line(stream.result, model))
        else:
            lines.append(head + "confidence: not scored for sampled text (temperature > 0)")
        yield done.rstrip("\n"), None, "\n\n".join(lines)


LOW = "low: this may well be wrong, so let a person check it before using it"


def confidence_line(result: Any, model: Any) -> str:
    """The confidence of a caption or answer as one Markdown line; a low one says so."""
    threshold = model.calibration.alt_text_threshold if model.calibration is not None else 0.5
    value = f"{result.confidence:.2f}"
    if not result.calibrated:
        value += " (uncalibrated: the mean token probability)"
    if result.confidence < threshold:
        return f"**Confidence {value}: {LOW}**"
    return f"Confidence {value}"


# ---------------------------------------------------------------- the app


def upload_path(payload: Any) -> str | None:
    """The server path of an upload as the event receives it (``preprocess=False``: a FileData
    dict whose path Gradio has checked to be in its upload folder), or None."""
    if payload is None:
        return None
    if isinstance(payload, dict):
        path = payload.get("path")
        if not path:
            raise InputError("the upload did not arrive as a file; upload it again")
        return str(path)
    return str(payload)


def build_app(
    checkpoints: dict[str, str],
    *,
    loader: Loader | None = None,
    device: str | None = None,
    concurrency_limit: int = DEFAULT_CONCURRENCY,
    max_queue: int = DEFAULT_QUEUE_SIZE,
    examples_dir: str | Path | None = None,
) -> gr.Blocks:
    """The demo as a ``gr.Blocks`` (queue configured), ready for :func:`launch_options`.

    checkpoints: display name -> folder (see :func:`find_checkpoints`); the first is selected.
    loader: folder -> model (default ``mmllm.load(folder, device=device)``), called once each.
    examples_dir: where example files are written (default: a temp folder removed at exit).
    """
    if not checkpoints:
        raise CheckpointError(
            "no checkpoint found in checkpoints/; pass one with --checkpoint FOLDER"
        )
    models = ModelCache(checkpoints, loader or (lambda path: mmllm.load(path, device=device)))
    if examples_dir is None:
        examples_dir = tempfile.mkdtemp(prefix="mmllm-demo-")
        atexit.register(shutil.rmtree, examples_dir, ignore_errors=True)
    rows = make_examples(Path(examples_dir))
    names = list(checkpoints)

    def run(
        checkpoint: str, mode: str, image: Any, audio: Any, *rest: Any
    ) -> Iterator[tuple[str, dict[str, float] | None]]:
        # preprocess=False: the model's own decoders judge the raw uploads, so a bad file gets
        # its typed error (Gradio's image preprocessing would fail first with a generic one)
        *rest, spoken = rest
        try:
            image, audio, spoken = upload_path(image), upload_path(audio), upload_path(spoken)
        except InputError as err:
            raise gr.Error(safe_message(err), print_exception=False) from None
        yield from respond(models, checkpoint, mode, image, audio, *rest, spoken)

    with gr.Blocks(title="mmllm", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# mmllm\nCaption an image or a sound, write alt text, or ask a question. "
            "The answer streams in; for questions, the answer's probability and the runners-up "
            "are shown."
        )
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    image = gr.Image(
                        label="Image",
                        type="filepath",
                        image_mode=None,
                        sources=["upload", "clipboard"],
                        elem_id="image-input",
                        height=260,
                    )
                    audio = gr.Audio(
                        label="Sound",
                        type="filepath",
                        format=None,
                        sources=["upload"],
                        elem_id="audio-input",
                    )
                spoken = gr.Audio(
                    label="Spoken question (Ask mode, instead of typing one)",
                    type="filepath",
                    format=None,
                    sources=["upload", "microphone"],
                    elem_id="spoken-question",
                )
                mode = gr.Radio(list(MODES), value="Caption", label="Mode", elem_id="mode")
                question = gr.Textbox(
                    label="Question (Ask mode)",
                    elem_id="question",
                    placeholder="what color is the circle?",
                )
                choices = gr.Textbox(
                    label="Choices (optional, comma-separated)",
                    placeholder="yes, no",
                    elem_id="choices",
                )
                with gr.Accordion("Settings", open=False):
                    checkpoint = gr.Dropdown(
                        names, value=names[0], label="Checkpoint", elem_id="checkpoint"
                    )
                    length = gr.Slider(1, 64, value=32, step=1, label="Max new tokens")
                    temperature = gr.Slider(
                        0.0, 2.0, value=0.0, step=0.05, label="Temperature (0 = greedy)"
                    )
                    top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="Top-p")
                    max_chars = gr.Slider(
                        20, 250, value=125, step=5, label="Alt text: max characters"
                    )
                button = gr.Button("Run", variant="primary", elem_id="run")
            with gr.Column():
                output = gr.Textbox(label="Output", lines=4, elem_id="output", buttons=["copy"])
                confidence = gr.Markdown(elem_id="confidence")
                probs = gr.Label(label="Answer probabilities", num_top_classes=4, elem_id="probs")
        if rows:
            gr.Examples(
                rows, inputs=[image, audio, mode, question], label="Examples", cache_examples=False
            )
        inputs = [
            checkpoint,
            mode,
            image,
            audio,
            question,
            choices,
            length,
            temperature,
            top_p,
            max_chars,
            spoken,
        ]
        # both triggers share one concurrency group: at most `concurrency_limit` model calls
        event = {
            "fn": run,
            "inputs": inputs,
            "outputs": [output, probs, confidence],
            "preprocess": False,
            "time_limit": TIME_LIMIT_S,
            "concurrency_limit": concurrency_limit,
            "concurrency_id": "model",
        }
        button.click(api_name="run", **event)
        question.submit(api_visibility="private", **event)
    demo.queue(default_concurrency_limit=concurrency_limit, max_size=max_queue)
    return demo


def launch_options(
    host: str = DEFAULT_HOST,
    port: int | None = DEFAULT_PORT,
    max_file_size: str | int = DEFAULT_MAX_FILE_SIZE,
) -> dict[str, Any]:
    """Keyword arguments for ``gr.Blocks.launch``: local, private, bounded."""
    return {
        "server_name": host,
        "server_port": port,
        "share": False,  # never a public tunnel
        "max_file_size": max_file_size,
        "show_error": False,  # unexpected exceptions stay in the server log
        "ssr_mode": False,
        "mcp_server": False,
        "enable_monitoring": False,
        "pwa": False,
        "inbrowser": False,
        "run_history": False,  # nothing recorded, no page offering to upload runs elsewhere
        "footer_links": ["api", "settings"],
    }


def serve(
    checkpoints: Sequence[str] = (),
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    device: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    max_file_size: str = DEFAULT_MAX_FILE_SIZE,
    compile: bool | None = None,
) -> int:
    """Find the checkpoints, build the app and serve it until interrupted. ``compile``: as
    ``mmllm.load``'s (None: once the requests served pay for the compile)."""
    found = find_checkpoints(checkpoints)
    demo = build_app(
        found,
        loader=lambda path: mmllm.load(path, device=device, compile=compile),
        concurrency_limit=concurrency,
        max_queue=queue_size,
    )
    print(f"mmllm demo: checkpoints {', '.join(found)}; serving on http://{host}:{port}")
    demo.launch(**launch_options(host, port, max_file_size))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python demos/app.py [flags]`` is ``mmllm demo [flags]``."""

    return mmllm_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
