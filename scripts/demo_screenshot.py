"""Take the README's demo screenshot: the app with the default model, a real photo captioned
and then a question about it answered, in a real headless Chromium (Debian's ``chromium``,
driven by Playwright); the two views are stacked into one PNG.

    python scripts/demo_screenshot.py --image demos/examples/cat.jpg \
        --question "what animal is this?" --out demos/screenshot.png
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "demos"))

from app import build_app, launch_options  # noqa: E402

import mmllm  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="mmllm-real")
    parser.add_argument("--image", default=str(ROOT / "demos" / "examples" / "cat.jpg"))
    parser.add_argument("--question", default="what animal is this?")
    parser.add_argument("--out", default=str(ROOT / "demos" / "screenshot.png"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    model = mmllm.load(args.checkpoint, device="cpu")
    caption = model.caption(args.image)
    answer = model.ask(args.image, args.question)
    print(f"caption: {caption}\nanswer: {answer.text} ({answer.prob:.2f})")
    demo = build_app({args.checkpoint: args.checkpoint}, loader=lambda _: model)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(**launch_options("127.0.0.1", port), prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.set_input_files("#image-input input[type=file]", args.image)
            page.click("#run")
            wait(lambda: page.input_value("#output textarea").strip() == caption.strip())
            shots = [page.screenshot(full_page=True)]
            page.get_by_role("radio", name="Ask").check()
            page.fill("#question textarea", args.question)
            page.click("#run")
            wait(lambda: page.inner_text("#probs h2").strip() == answer.text.strip())
            shots.append(page.screenshot(full_page=True))
            browser.close()
        stack(shots, args.out)
    finally:
        demo.close()
    print(f"wrote {args.out}")


def stack(pngs: list[bytes], out: str) -> None:
    """PNG screenshots, one above the other, into ``out``."""
    import io

    from PIL import Image

    images = [Image.open(io.BytesIO(png)).convert("RGB") for png in pngs]
    sheet = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
    top = 0
    for image in images:
        sheet.paste(image, (0, top))
        top += image.height
    sheet.save(out, optimize=True)


def wait(ready, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError("the page did not show the expected output")
        time.sleep(0.2)


if __name__ == "__main__":
    main()
