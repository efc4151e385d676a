"""The Gradio demo: safe defaults, a real browser session, a bounded load test, `mmllm demo`.

The app runs on loopback with the random tiny checkpoint (gibberish captions): tests check the
flow and that what reaches the user is exactly what the model said, not what it says.
``MMLLM_SAVE_SCREENSHOT=1`` also saves the browser test's screenshot to demos/screenshot.png
(``MMLLM_DEMO_CHECKPOINT=checkpoints/mmllm-tiny`` to show the trained model there).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

gr = pytest.importorskip("gradio", reason="the demo needs gradio (pip install -e '.[dev]')")

import mmllm  # noqa: E402
from demos.app import build_app, find_checkpoints, launch_options, safe_message  # noqa: E402
from mmllm.errors import ImageError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")  # pandas deprecations there

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "demos" / "examples"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
GEN = {"max_new_tokens": 32, "temperature": 0.0, "top_p": 0.9, "max_chars": 125}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def norm(text: str) -> str:
    """Whitespace-insensitive form (a browser may render control characters differently)."""
    return " ".join(text.split())


class CountedStream:
    """A model's text stream whose iteration counts as one call of ``counter``."""

    def __init__(self, counter: CountingModel, stream: Any):
        self.stream = stream
        self.pieces = self._counted(counter)

    def _counted(self, counter: CountingModel):
        with counter._call():
            yield from self.stream

    def __iter__(self):
        return self

    def __next__(self) -> str:
        return next(self.pieces)

    @property
    def result(self):
        return self.stream.result


class CountingModel:
    """A loaded model whose calls are counted: in flight now, most at once, total.

    ``delay`` seconds are spent inside each call, so that a burst really overlaps."""

    def __init__(self, model: Any, delay: float = 0.0):
        self.model, self.delay = model, delay
        self.active = self.max_active = self.calls = 0
        self._lock = threading.Lock()

    @contextmanager
    def _call(self):
        with self._lock:
            self.active += 1
            self.calls += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.delay)
            yield
        finally:
            with self._lock:
                self.active -= 1

    def stream_caption(self, *args: Any, **kwargs: Any):
        return CountedStream(self, self.model.stream_caption(*args, **kwargs))

    def ask(self, *args: Any, **kwargs: Any):
        with self._call():
            return self.model.ask(*args, **kwargs)

    def caption(self, *args: Any, **kwargs: Any):
        with self._call():
            return self.model.caption(*args, **kwargs)

    def transcribe(self, *args: Any, **kwargs: Any):
        with self._call():
            return self.model.transcribe(*args, **kwargs)

    def caption_speech(self, *args: Any, **kwargs: Any):
        with self._call():
            return self.model.caption_speech(*args, **kwargs)

    @property
    def calibration(self):
        return self.model.calibration


@contextmanager
def serving(checkpoint: Path, tmp: Path, delay: float = 0.0, **options: Any):
    """The app on a free loopback port: yields (url, the counting model)."""
    model = CountingModel(mmllm.load(checkpoint, device="cpu"), delay)
    demo = build_app({"tiny": str(checkpoint)}, loader=lambda _: model, examples_dir=tmp, **options)
    port = free_port()
    demo.launch(**launch_options("127.0.0.1", port), prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", model
    finally:
        demo.close()


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint) -> Path:
    return Path(os.environ.get("MMLLM_DEMO_CHECKPOINT") or tiny_checkpoint)


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    with serving(checkpoint, tmp_path_factory.mktemp("examples")) as (url, model):
        yield url, model


# ---------------------------------------------------------------- defaults and messages


def test_safe_defaults():
    options = launch_options()
    assert options["server_name"] == "127.0.0.1" and options["share"] is False
    assert options["max_file_size"] and options["show_error"] is False
    assert options["run_history"] is False and options["mcp_server"] is False
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


def test_error_messages_are_one_short_line_without_server_paths():
    upload = "/tmp/gradio/0123abcd/holiday photo.png"
    err = ImageError(f"cannot decode image {upload}: cannot identify image file '{upload}'")
    text = safe_message(err, [upload])
    assert "holiday photo.png" in text and "/tmp" not in text and "\n" not in text
    other = safe_message(ValueError("bad file C:\\Users\\me\\x.wav and /srv/app/y.png\nTraceback"))
    assert other == "bad file x.wav and y.png"
    assert len(safe_message(ValueError("x" * 5000))) <= 300


def test_checkpoints_passed_come_first_and_missing_ones_are_named(tiny_checkpoint):
    found = find_checkpoints([str(tiny_checkpoint)])
    assert next(iter(found)) == tiny_checkpoint.name
    assert found[tiny_checkpoint.name] == str(tiny_checkpoint)
    with pytest.raises(mmllm.CheckpointError, match="no-such-checkpoint"):
        find_checkpoints(["no-such-checkpoint"])


def test_app_needs_a_checkpoint():
    with pytest.raises(mmllm.CheckpointError, match="--checkpoint"):
        build_app({})


def test_a_stream_resumes_on_any_thread_and_keeps_inference_mode_to_itself(tiny_checkpoint):
    """Gradio advances a streaming generator on whichever worker thread is free."""
    import torch

    model = mmllm.load(tiny_checkpoint, device="cpu")
    image = str(EXAMPLES / "shapes2.png")
    stream = model.stream_caption(image, max_new_tokens=12)
    pieces: list[str | None] = [next(stream)]
    assert not torch.is_inference_mode_enabled()  # nothing leaks into the caller

    def step() -> None:
        pieces.append(next(stream, None))

    while pieces[-1] is not None:
        thread = threading.Thread(target=step)
        thread.start()
        thread.join()
    assert "".join(pieces[:-1]) == "".join(model.stream_caption(image, max_new_tokens=12))


# ---------------------------------------------------------------- the API over HTTP


def call(
    client: Any,
    image: Any = None,
    audio: Any = None,
    mode: str = "Caption",
    question: str = "",
    **gen: Any,
) -> tuple[str, Any]:
    args = {**GEN, **gen}
    return predict(client, image, audio, mode, question, args)[:2]


def predict(client: Any, image: Any, audio: Any, mode: str, question: str, args: dict) -> tuple:
    """All outputs: text, answer probabilities, confidence line."""
    return client.predict(
        "tiny",
        mode,
        image,
        audio,
        question,
        "",
        args["max_new_tokens"],
        args["temperature"],
        args["top_p"],
        args["max_chars"],
        args.get("spoken"),
        api_name="/run",
    )


def test_api_caption_alt_text_ask_and_a_bad_file(server, checkpoint, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, counted = server
    model = counted.model
    image, sound = EXAMPLES / "shapes2.png", EXAMPLES / "beeps.wav"
    client = Client(url, verbose=False)
    text, _ = call(client, handle_file(str(image)))
    assert text == "".join(model.stream_caption(str(image), max_new_tokens=32)).strip()
    alt, _ = call(client, handle_file(str(image)), mode="Alt text", max_chars=40)
    assert len(alt) <= 40 and alt.endswith(".")
    answer, probs = call(client, handle_file(str(image)), mode="Ask", question="is there a star?")
    expected = model.ask(str(image), "is there a star?")
    assert answer == expected.text and probs["label"] == expected.text
    *_, line = predict(client, handle_file(str(image)), None, "Caption", "", GEN)
    scored = model.caption(str(image), max_new_tokens=GEN["max_new_tokens"])
    assert line.startswith(("Confidence", "**Confidence")) and f"{scored.confidence:.2f}" in line
    assert ("may well be wrong" in line) == (scored.confidence < 0.5)  # uncalibrated: 0.5
    assert len(probs["confidences"]) == 1 + len(expected.alternatives)
    text, _ = call(client, audio=handle_file(str(sound)))
    assert text == "".join(model.stream_caption(audio=str(sound), max_new_tokens=32)).strip()
    both, _ = call(client, handle_file(str(image)), handle_file(str(sound)), max_new_tokens=4)
    assert both.startswith("image: ") and "\nsound: " in both
    with pytest.raises(AppError, match="alt text is for images"):
        call(client, audio=handle_file(str(sound)), mode="Alt text")
    spoken = handle_file(str(EXAMPLES / "question.wav"))
    answer, _ = call(client, handle_file(str(image)), mode="Ask", spoken=spoken)
    assert answer == model.ask(str(image), "What color is the circle?").text
    *_, line = predict(client, handle_file(str(image)), None, "Ask", "", GEN | {"spoken": spoken})
    assert line.startswith('Heard: "What color is the circle?"')
    said, _ = call(client, audio=spoken)
    assert said == 'someone says: "What color is the circle?"'
    with pytest.raises(AppError, match="no question was heard"):
        call(client, handle_file(str(image)), mode="Ask", spoken=handle_file(str(sound)))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(AppError) as info:
        call(client, handle_file(str(bad)))
    message = str(info.value)
    assert "broken.png" in message and str(tmp_path) not in message and "/" not in message
    with pytest.raises(AppError, match="upload an image or a sound"):
        call(client)
    with pytest.raises(AppError, match="question"):
        call(client, handle_file(str(image)), mode="Ask", question="  ")


# ---------------------------------------------------------------- load


def test_burst_beyond_the_queue_is_bounded_and_the_server_recovers(checkpoint, tmp_path):
    """16 requests at once at a server that runs 2 and queues 4 (each model call held 1.5 s so
    that the burst overlaps): the accepted ones finish with the right output, the rest are
    refused fast, at most 2 model calls ever overlap, the bad files in the mix fail with their
    message, and the server then serves normally."""
    from gradio_client import Client, handle_file

    burst, limit, queue, first = 16, 2, 4, 4
    bad_ones = {0, 3, 9}  # 0 and 3 are in the first wave, which the queue always takes
    image = EXAMPLES / "shapes1.png"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"GIF89a but truncated")
    with serving(
        checkpoint, tmp_path / "examples", delay=1.5, concurrency_limit=limit, max_queue=queue
    ) as (url, counted):
        expected = "".join(counted.model.stream_caption(str(image), max_new_tokens=8)).strip()
        client = Client(url, verbose=False, max_workers=burst + 4)
        good_file, bad_file = handle_file(str(image)), handle_file(str(bad))
        results: dict[int, tuple[str, Any, float]] = {}

        def one(i: int) -> None:
            start = time.perf_counter()
            try:
                out = call(client, bad_file if i in bad_ones else good_file, max_new_tokens=8)
                results[i] = ("ok", out[0], time.perf_counter() - start)
            except Exception as err:  # refused (queue full) or failed (bad file)
                results[i] = (type(err).__name__, str(err), time.perf_counter() - start)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(burst)]
        t0 = time.perf_counter()
        for t in threads[:first]:
            t.start()
        while counted.calls < limit and time.perf_counter() - t0 < 20:  # the first wave runs
            time.sleep(0.01)
        for t in threads[first:]:
            t.start()
        for t in threads:
            t.join(timeout=60)
        wall = time.perf_counter() - t0
        assert len(results) == burst, "every request got an answer"
        refused = {i: r for i, r in results.items() if "queue is full" in r[1].lower()}
        ok = {i: r for i, r in results.items() if r[0] == "ok"}
        failed = {i: r for i, r in results.items() if i not in ok and i not in refused}
        assert refused, "a burst larger than the queue is partly refused"
        assert len(ok) + len(failed) <= limit + queue + 2  # accepted: running + queued (+ slack)
        assert all(r[1] == expected for r in ok.values()), "accepted jobs return the right text"
        assert {0, 3} <= set(failed) <= bad_ones, f"bad files (only) fail: {failed}"
        assert all("bad.png" in r[1] and "/" not in r[1] for r in failed.values())
        assert counted.max_active <= limit, "the concurrency limit holds"
        refusal_s = max(r[2] for r in refused.values())
        assert refusal_s < 5.0, "refusals are quick"
        after = call(client, good_file, max_new_tokens=8)[0]
        assert after == expected and counted.active == 0
        print(
            f"\nload: burst {burst}, accepted {len(ok) + len(failed)} ({len(ok)} ok, "
            f"{len(failed)} bad files failed cleanly), refused {len(refused)}, max concurrent "
            f"model calls {counted.max_active} (limit {limit}), refusals in "
            f"{min(r[2] for r in refused.values()):.2f}-{refusal_s:.2f}s (upload included), "
            f"burst done in {wall:.1f}s"
        )


# ---------------------------------------------------------------- a real browser


def _browser_or_skip():
    """playwright's sync API; skips where it or chromium is missing (fails in CI: it must run)."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install -e '.[dev]')"
    if missing is None and not Path(CHROMIUM).is_file():
        missing = "chromium is not installed (apt-get install -y chromium)"
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI: {missing}")
        pytest.skip(missing)
    return sync_playwright


def _wait_for(page: Any, get: Any, expected: str, timeout_s: float = 30.0) -> str:
    """Poll ``get(page)`` until its normalised text equals ``expected``; return it."""
    deadline = time.monotonic() + timeout_s
    value = ""
    while time.monotonic() < deadline:
        value = get(page)
        if norm(value) == norm(expected):
            return value
        page.wait_for_timeout(100)
    raise AssertionError(f"page shows {value!r}, expected {expected!r}")


def test_browser_caption_ask_spoken_question_and_audio(server, tmp_path):
    sync_playwright = _browser_or_skip()
    url, counted = server
    model = counted.model
    image, sound = EXAMPLES / "shapes2.png", EXAMPLES / "beeps.wav"
    question = "what color is the star?"
    caption = "".join(model.stream_caption(str(image), max_new_tokens=32))
    answer = model.ask(str(image), question)
    sound_caption = "".join(model.stream_caption(audio=str(sound), max_new_tokens=32))
    spoken = EXAMPLES / "question.wav"  # "What color is the circle?"
    spoken_answer = model.ask(str(image), "What color is the circle?")

    def output(page: Any) -> str:
        return page.input_value("#output textarea")

    start = time.perf_counter()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.set_input_files("#image-input input[type=file]", str(image))
            page.click("#run")
            _wait_for(page, output, caption)

            page.get_by_role("radio", name="Ask").check()
            page.fill("#question textarea", question)
            page.click("#run")
            _wait_for(page, lambda p: p.inner_text("#probs h2"), answer.text)
            assert norm(output(page)) == norm(answer.text)
            rows = page.locator("#probs .confidence").all_inner_texts()
            assert len(rows) == 1 + len(answer.alternatives)
            assert all(r.strip().endswith("%") for r in rows)
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            if os.environ.get("MMLLM_SAVE_SCREENSHOT") == "1":
                page.screenshot(path=str(ROOT / "demos" / "screenshot.png"), full_page=True)

            page.fill("#question textarea", "")  # the question spoken instead
            page.set_input_files("#spoken-question input[type=file]", str(spoken))
            page.click("#run")
            _wait_for(page, lambda p: p.inner_text("#probs h2"), spoken_answer.text)
            assert 'Heard: "What color is the circle?"' in page.inner_text("#confidence")

            page.reload()
            page.set_input_files("#audio-input input[type=file]", str(sound))
            page.click("#run")
            _wait_for(page, output, sound_caption)
        finally:
            browser.close()
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    print(f"\nbrowser test: {time.perf_counter() - start:.1f}s")


# ---------------------------------------------------------------- the command


def test_mmllm_demo_serves_on_loopback_until_stopped(tiny_checkpoint):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mmllm.cli",
            "demo",
            "--checkpoint",
            str(tiny_checkpoint),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as r:
                    config = r.read().decode()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "the demo did not start in 60 s"
                time.sleep(0.5)
        assert tiny_checkpoint.name in config
        listening = [c for c in _listening_addresses(port) if c]
        assert listening and all(a.startswith("127.") for a in listening), listening
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _listening_addresses(port: int) -> list[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                if len(address) == 8:
                    found.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                else:
                    found.append("::" + address)
    return found
