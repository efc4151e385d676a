"""The alt-text script (``mmllm alt-text``): HTML and Markdown edited in place, byte for byte.

Editing is checked with a fixed alt text (exact expected documents); the runs use the random
tiny checkpoint, whose alt text is gibberish but real, through the whole command.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from mmllm.alt_text import apply, html_slots, main, markdown_slots
from mmllm.cli import main as mmllm_main

EXAMPLES = Path(__file__).resolve().parent.parent / "demos" / "examples"

HTML = """<!doctype html>
<HTML><body>
<!-- <img src="in-a-comment.png"> -->
<script>const s = "<img src='in-a-script.png'>";</script>
<img src="a.png">
<img src='b.png' alt="">
<IMG SRC=c.png ALT="A red circle">
<img srcset="d.png 1x, d2.png 2x" width=3 />
<img alt src="e.png"/>
<img src=f.png alt=''>
<img
  src="g.png"
  alt="   ">
<p>caf\u00e9 &amp; <img src="https://example.com/h.png"></p>
</body></HTML>
"""

FILLED = """<!doctype html>
<HTML><body>
<!-- <img src="in-a-comment.png"> -->
<script>const s = "<img src='in-a-script.png'>";</script>
<img src="a.png" alt="NEW &quot;x&quot; &amp; y">
<img src='b.png' alt="NEW &quot;x&quot; &amp; y">
<IMG SRC=c.png ALT="A red circle">
<img srcset="d.png 1x, d2.png 2x" alt="NEW &quot;x&quot; &amp; y" width=3 />
<img alt="NEW &quot;x&quot; &amp; y" src="e.png"/>
<img src=f.png alt='NEW &quot;x&quot; &amp; y'>
<img
  src="g.png"
  alt="NEW &quot;x&quot; &amp; y">
<p>caf\u00e9 &amp; <img src="https://example.com/h.png"></p>
</body></HTML>
"""


def fill_empty(text: str, finder, alt: str = 'NEW "x" & y') -> str:
    """Fill every missing/empty alt of local images with ``alt`` (what the script does)."""
    slots, _ = finder(text)
    edits = [(s, alt) for s in slots if not (s.alt or "").strip() and "://" not in s.src]
    return apply(text, edits)


def test_html_images_found_with_their_sources_and_alt_text():
    slots, notes = html_slots(HTML)
    assert notes == []
    assert [(s.line, s.src, s.alt) for s in slots] == [
        (5, "a.png", None),
        (6, "b.png", ""),
        (7, "c.png", "A red circle"),
        (8, "d.png", None),
        (9, "e.png", ""),
        (10, "f.png", ""),
        (11, "g.png", "   "),
        (14, "https://example.com/h.png", None),
    ]


def test_html_edit_changes_only_the_alt_text():
    assert fill_empty(HTML, html_slots) == FILLED
    assert fill_empty(FILLED, html_slots) == FILLED  # nothing left to fill


def test_uppercase_tag_gets_an_uppercase_attribute():
    out = fill_empty('<P><IMG SRC="x.png" WIDTH=2></P>', html_slots, "a b")
    assert out == '<P><IMG SRC="x.png" ALT="a b" WIDTH=2></P>'


MARKDOWN = """# Title

![](a.png "A title") and ![kept](b.png) and ![ ](<c d.png>)
Inline `![](code.png)` and a fence:

```
![](fenced.png)
```
<img src="e.png">
![ref style][r]
"""


def test_markdown_images_filled_outside_code():
    out = fill_empty(MARKDOWN, markdown_slots, "a [b] c")
    assert out == MARKDOWN.replace("![](a.png", r"![a \[b\] c](a.png").replace(
        "![ ](<c d.png>)", r"![a \[b\] c](<c d.png>)"
    ).replace('<img src="e.png">', '<img src="e.png" alt="a [b] c">')
    slots, _ = markdown_slots(out)
    assert {s.src: s.alt for s in slots} == {
        "a.png": "a [b] c",
        "b.png": "kept",
        "c d.png": "a [b] c",
        "e.png": "a [b] c",
    }


# ---------------------------------------------------------------- the command


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """index.html and README.md with images that need alt text, one with, one remote."""
    (tmp_path / "img").mkdir()
    shutil.copy(EXAMPLES / "shapes1.png", tmp_path / "img" / "one.png")
    shutil.copy(EXAMPLES / "shapes2.png", tmp_path / "img" / "two words.png")
    (tmp_path / "index.html").write_bytes(
        b"<html>\r\n<body>\r\n<img src=\"img/one.png\">\r\n<IMG SRC='img/two%20words.png' ALT=''>"
        b'\r\n<img src="img/one.png" alt="Keep me">\r\n'
        b'<img src="https://example.com/x.png">\r\n</body>\r\n</html>'
    )
    (tmp_path / "README.md").write_text('# Site\n\n![](img/one.png "One")\n', encoding="utf-8")
    return tmp_path


def run(*args: str, checkpoint: Path) -> int:
    return main([*args, "--checkpoint", str(checkpoint)])


def test_dry_run_prints_a_diff_and_changes_nothing(site, tiny_checkpoint, capsys):
    before = (site / "index.html").read_bytes()
    assert run(str(site / "index.html"), checkpoint=tiny_checkpoint) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"--- {site / 'index.html'}\n+++ ")
    added = [line for line in out.splitlines() if line.startswith("+<")]
    assert len(added) == 2 and not any("Keep me" in line for line in added)
    assert (site / "index.html").read_bytes() == before
    assert not list(site.glob("*.bak*"))
    assert "remote URL skipped" in err and "dry run" in err and "summary:" in err


def test_write_fills_atomically_keeps_a_backup_and_is_idempotent(site, tiny_checkpoint, capsys):
    before = (site / "index.html").read_bytes()
    assert run(str(site), "--write", checkpoint=tiny_checkpoint) == 0
    after = (site / "index.html").read_bytes()
    assert (site / "index.html.bak").read_bytes() == before
    slots, _ = html_slots(after.decode())
    alts = [s.alt for s in slots]
    assert all(alts[:2]) and alts[2] == "Keep me" and alts[3] is None  # remote: untouched
    # everything but the alt text is byte-identical (CRLF line ends included): the new alt
    # text written into the old document gives exactly the new document
    old_slots, _ = html_slots(before.decode())
    edits = [(s, alt) for s, alt in zip(old_slots, alts, strict=True) if s.alt != alt]
    assert len(edits) == 2 and apply(before.decode(), edits).encode() == after
    readme = (site / "README.md").read_text()
    assert readme.startswith("# Site\n\n![") and not readme.startswith("# Site\n\n![](")
    capsys.readouterr()
    assert run(str(site), "--write", checkpoint=tiny_checkpoint) == 0  # second run: no change
    out, err = capsys.readouterr()
    assert (site / "index.html").read_bytes() == after and out == ""
    assert sorted(p.name for p in site.glob("*.bak*")) == ["README.md.bak", "index.html.bak"]
    assert "changed: 0" in err


def test_existing_alt_text_is_kept_unless_overwrite(site, tiny_checkpoint, capsys):
    page = site / "index.html"
    run(str(page), "--write", checkpoint=tiny_checkpoint)
    assert b'alt="Keep me"' in page.read_bytes()
    (site / "index.html.bak").unlink()
    assert run(str(page), "--write", "--overwrite", checkpoint=tiny_checkpoint) == 0
    assert b"Keep me" not in page.read_bytes()
    assert b"Keep me" in (site / "index.html.bak").read_bytes()


def test_an_existing_backup_is_never_replaced(site, tiny_checkpoint, capsys):
    page = site / "index.html"
    (site / "index.html.bak").write_bytes(b"an older backup")
    original = page.read_bytes()
    assert run(str(page), "--write", checkpoint=tiny_checkpoint) == 0
    assert (site / "index.html.bak").read_bytes() == b"an older backup"
    assert (site / "index.html.bak.1").read_bytes() == original
    assert "index.html.bak.1" in capsys.readouterr().err


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_a_failure_mid_write_leaves_the_original_intact(
    site, tiny_checkpoint, monkeypatch, fail_at, capsys
):
    page = site / "index.html"
    original = page.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, fail_at, boom)
    assert run(str(page), "--write", checkpoint=tiny_checkpoint) == 1
    monkeypatch.undo()
    assert page.read_bytes() == original
    assert sorted(p.name for p in site.iterdir()) == ["README.md", "img", "index.html"]
    assert "could not write" in capsys.readouterr().err


def test_images_report_csv_and_json(site, tiny_checkpoint, tmp_path, capsys):
    images = str(site / "img" / "*.png")
    assert run(images, "--report", str(tmp_path / "r.csv"), checkpoint=tiny_checkpoint) == 0
    rows = list(csv.DictReader((tmp_path / "r.csv").open(encoding="utf-8")))
    assert [Path(r["file"]).name for r in rows] == ["one.png", "two words.png"]
    assert all(r["status"] == "captioned" and r["alt"].endswith(".") for r in rows)
    assert run(str(site), "--report", str(tmp_path / "r.json"), checkpoint=tiny_checkpoint) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    statuses = sorted({r["status"] for r in report})
    assert statuses == ["filled", "kept", "skipped"]  # a folder with documents: those
    remote = next(r for r in report if r["status"] == "skipped")
    assert remote["image"] == "https://example.com/x.png" and "remote" in remote["note"]
    assert not (site / "index.html.bak").exists()  # a report is not a write


def test_exit_codes(site, tiny_checkpoint, tmp_path, capsys):
    (site / "broken.png").write_bytes(b"not an image")
    (site / "notes.txt").write_text("x")
    (site / "missing.html").write_text('<img src="nowhere.png">')
    assert run(str(site / "img" / "one.png"), checkpoint=tiny_checkpoint) == 0
    assert run(str(site / "broken.png"), str(site / "img"), checkpoint=tiny_checkpoint) == 2
    assert run(str(site / "notes.txt"), checkpoint=tiny_checkpoint) == 2
    assert run(str(site / "missing.html"), checkpoint=tiny_checkpoint) == 2
    assert run(str(tmp_path / "nothing-*.png"), checkpoint=tiny_checkpoint) == 2
    assert run(str(site / "img"), "--report", "r.xlsx", checkpoint=tiny_checkpoint) == 2
    assert main([str(site / "img"), "--checkpoint", str(tmp_path / "no-model")]) == 1
    err = capsys.readouterr().err
    assert "nowhere.png" in err and "not an image, HTML or Markdown" in err


def test_a_document_needing_no_caption_does_not_load_the_model(tmp_path, capsys):
    page = tmp_path / "p.html"
    page.write_text('<img src="x.png" alt="Fine"><img src="http://e.org/y.png">')
    assert main([str(page), "--checkpoint", str(tmp_path / "no-model")]) == 0


def test_mmllm_alt_text_is_this_script(site, tiny_checkpoint, capsys):
    assert (
        mmllm_main(
            ["alt-text", str(site / "img" / "one.png"), "--checkpoint", str(tiny_checkpoint)]
        )
        == 0
    )
    assert capsys.readouterr().out.strip().endswith(".")
    with pytest.raises(SystemExit):
        mmllm_main(["alt-text", "--help"])
    help_text = capsys.readouterr().out
    assert "examples:" in help_text and "exit codes:" in help_text and "--write" in help_text


def test_write_never_writes_below_the_threshold_and_names_each_skipped_image(tmp_path, capsys):
    """The shipped, calibrated mmllm-tiny on a folder mixing its own scenes with real photos,
    noise and plain colour: only confident alt text is written, every other image is listed
    as needing a person, in the summary and the report."""
    import numpy as np
    from PIL import Image

    (tmp_path / "img").mkdir()
    for name in ("shapes1.png", "shapes2.png", "cat.jpg", "coffee.jpg"):
        shutil.copy(EXAMPLES / name, tmp_path / "img" / name)
    noise = np.random.default_rng(0).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "img" / "noise.png")
    Image.new("RGB", (64, 64), (20, 90, 200)).save(tmp_path / "img" / "blue.png")
    Image.new("RGB", (64, 64), "black").save(tmp_path / "img" / "black.png")
    names = sorted(p.name for p in (tmp_path / "img").iterdir())
    page = tmp_path / "index.html"
    page.write_text("".join(f'<img src="img/{n}">\n' for n in names), encoding="utf-8")
    report = tmp_path / "report.json"
    code = main([str(page), "--write", "--report", str(report), "--checkpoint", "mmllm-tiny"])
    err = capsys.readouterr().err
    assert code == 0
    rows = {Path(r["image"]).name: r for r in json.loads(report.read_text())}
    threshold = float(err.rsplit("confidence threshold ", 1)[1].split()[0])
    written = page.read_text()
    for name, row in rows.items():
        if row["status"] == "filled":
            assert row["confidence"] >= threshold and f'alt="{row["alt"]}"' in written
        else:
            assert row["status"] == "needs a person" and row["confidence"] < threshold
            assert f'<img src="img/{name}">' in written  # untouched
            assert f"needs a person: {page}:" in err and name in err
    assert rows["shapes1.png"]["status"] == rows["shapes2.png"]["status"] == "filled"
    for name in ("cat.jpg", "coffee.jpg", "noise.png", "blue.png", "black.png"):
        assert rows[name]["status"] == "needs a person", (name, rows[name])
    assert "needs a person: 5" in err
