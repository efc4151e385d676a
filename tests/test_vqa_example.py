"""The API example runs as a script and shows every part of the API it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "demos" / "vqa_example.py"


def test_vqa_example_runs_as_a_script(tiny_checkpoint, tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--checkpoint", str(tiny_checkpoint)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for section in ("== images", "== sound", "== batch", "== streaming", "== errors"):
        assert section in out
    for line in ("caption: ", "alt text:", "answer: ", "yes/no: ", "both: ", "sampled: "):
        assert line in out
    assert "shapes2.png:" in out and "shapes1.png alt:" in out
    assert "TextError: the question is empty" in out
