"""The Python API on images and sounds: captions, alt text, questions, batches, streaming.

    python demos/vqa_example.py                                  # the shipped mmllm-tiny
    python demos/vqa_example.py --checkpoint runs/mine/checkpoint

Every call below is public API (``mmllm.load`` and the methods of the model it returns); the
files are the examples in demos/examples.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mmllm

EXAMPLES = Path(__file__).resolve().parent / "examples"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="folder (default: mmllm-tiny)")
    args = parser.parse_args(argv)

    model = mmllm.load(args.checkpoint)  # the shipped model, or a checkpoint folder
    scene, other, beeps = EXAMPLES / "shapes2.png", EXAMPLES / "shapes1.png", EXAMPLES / "beeps.wav"

    print("== images")
    print("caption: ", model.caption(scene))
    print("alt text:", model.alt_text(scene, max_chars=80))
    answer = model.ask(scene, "what color is the star?")  # -> Answer(text, prob, alternatives)
    runners_up = ", ".join(f"{text!r} {p:.2f}" for text, p in answer.alternatives)
    print(f"answer:   {answer.text!r} (p={answer.prob:.2f}); runners-up: {runners_up}")
    closed = model.ask(scene, "is there a star?", choices=["yes", "no"])  # a closed answer set
    print(f"yes/no:   {closed.text!r} (p={closed.prob:.2f})")

    print("== sound")
    print("caption: ", model.caption(audio=beeps))
    answer = model.ask(audio=beeps, question="how many beeps are there?")
    print(f"answer:   {answer.text!r} (p={answer.prob:.2f})")
    answer = model.ask(scene, "are there as many beeps as stars?", audio=beeps)  # both at once
    print(f"both:     {answer.text!r} (p={answer.prob:.2f})")

    print("== batch (same results as one by one)")
    for path, caption in zip(
        [scene, other], model.caption([scene, other], batch_size=2), strict=True
    ):
        print(f"{path.name}: {caption}")
    for path, text in zip([scene, other], model.alt_text([scene, other]), strict=True):
        print(f"{path.name} alt: {text}")

    print("== streaming")
    for piece in model.stream_caption(scene):
        print(piece, end="", flush=True)
    print()
    text = model.generate(
        "what shape is red?", images=[scene], max_new_tokens=8, temperature=0.7, top_p=0.9, seed=0
    )
    print("sampled: ", text)

    print("== errors are typed")
    try:
        model.ask(scene, "   ")
    except mmllm.TextError as err:  # an InputError, so also a ValueError
        print("TextError:", err)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
