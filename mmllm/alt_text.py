"""Alt text for images, and for the images of HTML and Markdown documents (``mmllm alt-text``).

Images (files, folders, globs) get alt text printed, or written to a CSV/JSON ``--report``.
HTML and Markdown files get the missing or empty alt text of their local images filled in:
relative paths are resolved against the document, remote URLs are skipped with a note (no
network), existing alt text is kept unless ``--overwrite``. A dry run by default prints a
unified diff; ``--write`` edits in place atomically (temp file + ``os.replace``) and keeps the
original as ``FILE.bak`` (or ``FILE.bak.1``, ... when a backup exists: it is never replaced).
Only the bytes of the alt text change: HTML tags are located with the stdlib ``html.parser``
and edited in the original text, so everything else stays byte-identical, and a second run
changes nothing. It uses the public API only (``mmllm.load``, ``MMLLM.alt_text``).

Exit codes: 0 all done; 1 an error (checkpoint, writing a file or report); 2 bad input (no
input found, unsupported or unreadable file, a document's local image missing).
"""

from __future__ import annotations

import argparse
import csv
import difflib
import glob
import html
import io
import json
import os
import re
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from mmllm.errors import MMLLMError
from mmllm.tasks import load

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
ENCODING = ("utf-8", "surrogateescape")  # any bytes round-trip unchanged

DESCRIPTION = """\
Alt text for images, and for the images of HTML and Markdown documents.

Images get their alt text printed, or written to a CSV or JSON report. A folder stands for
its HTML and Markdown files, or for its images when it has none; globs are expanded.
HTML and Markdown files get the missing or empty alt text of their local images filled in
(paths relative to the document; remote URLs are skipped, nothing is downloaded). By default a
dry run prints a unified diff; --write edits the files in place, atomically, keeping the
original as FILE.bak (FILE.bak.1, ... if that exists). Existing alt text is kept unless
--overwrite, and a second run changes nothing. A summary ends the output (on stderr).
"""
EPILOG = """\
examples:
  mmllm alt-text chart.png                       # print alt text
  mmllm alt-text img/ 'shots/*.png' --report alt.csv
  mmllm alt-text site/index.html                 # dry run: show the diff
  mmllm alt-text site/ --write                   # fill missing alt text in place (FILE.bak kept)
  mmllm alt-text README.md --write --overwrite   # also replace existing alt text

exit codes:
  0  all done (remote images skipped with a note still count as done)
  1  error: the checkpoint could not be loaded, a file or the report could not be written
  2  bad input: no input found, an unsupported or unreadable file, a missing local image
"""


# ---------------------------------------------------------------- finding images in documents


@dataclass
class Slot:
    """One image of a document: where its alt text is and how to write a new one.

    ``start:end`` is the span of the document text that :attr:`render` replaces (an empty span
    is an insertion); ``alt`` is the current alt text (None: no alt attribute).
    """

    line: int
    src: str
    alt: str | None
    start: int
    end: int
    render: Callable[[str], str] = field(repr=False)


# the tag name, then attributes, as html.parser reads them (its tolerant patterns)
_TAG_NAME = re.compile(r"<([a-zA-Z][^\t\n\r\f />\x00]*)(?:\s|/(?!>))*")
_ATTR = re.compile(
    r"((?<=['\"\s/])[^\s/>][^\s/=>]*)(\s*=+\s*('[^']*'|\"[^\"]*\"|(?!['\"])[^>\s]*))?(?:\s|/(?!>))*"
)


class _ImgTags(HTMLParser):
    """Collects ``(line, column, raw tag text, parsed attributes)`` of every ``<img>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[int, int, str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            line, column = self.getpos()
            self.tags.append((line, column, self.get_starttag_text() or "", attrs))


def _line_starts(text: str) -> list[int]:
    """Offsets of line starts, counting ``\\n`` only (as html.parser's positions do)."""
    return [0] + [m.end() for m in re.finditer("\n", text)]


def html_slots(text: str) -> tuple[list[Slot], list[str]]:
    """Every ``<img>`` of an HTML text, with the spans to edit; and notes on tags left alone."""
    parser = _ImgTags()
    parser.feed(text)
    parser.close()
    starts = _line_starts(text)
    slots, notes = [], []
    for line, column, raw, attrs in parser.tags:
        offset = starts[line - 1] + column
        slot = _slot_of_tag(text, offset, raw, attrs, line) if raw else None
        if slot is None:
            notes.append(f"line {line}: an <img> tag could not be located exactly; left as is")
        else:
            slots.append(slot)
    return slots, notes


def _slot_of_tag(
    text: str, offset: int, raw: str, attrs: list[tuple[str, str | None]], line: int
) -> Slot | None:
    """The alt text slot of the tag ``raw`` at ``offset``; None where our reading of its
    attributes differs from html.parser's (then the tag is not touched)."""
    if text[offset : offset + len(raw)] != raw:
        return None
    name = _TAG_NAME.match(raw)
    if name is None:
        return None
    found: dict[str, re.Match[str]] = {}
    read: list[tuple[str, str | None]] = []
    k = name.end()
    while k < len(raw):
        m = _ATTR.match(raw, k)
        if not m:
            break
        key, value = m.group(1).lower(), m.group(3)
        if value is not None and value[:1] in ("'", '"') and value[:1] == value[-1:]:
            value = value[1:-1]
        read.append((key, html.unescape(value) if value is not None else None))
        found.setdefault(key, m)
        k = m.end()
    if read != attrs:
        return None
    values: dict[str, str | None] = {}
    for key, value in attrs:  # a repeated attribute: the first one counts (as in browsers)
        values.setdefault(key, value)
    src = (values.get("src") or "").strip() or _first_srcset_url(values.get("srcset") or "")
    upper = name.group(1).isupper()
    if "alt" in found:
        m = found["alt"]
        alt = values.get("alt") or ""
        if m.group(3) is None:  # a bare `alt`: give it a value
            start = end = offset + m.end(1)
            return Slot(line, src, alt, start, end, lambda t: f'="{_attr(t)}"')
        value = m.group(3)
        if value[:1] in ("'", '"'):  # replace inside the quotes
            start, end = offset + m.start(3) + 1, offset + m.end(3) - 1
            return Slot(line, src, alt, start, end, _attr)
        start, end = offset + m.start(3), offset + m.end(3)
        return Slot(line, src, alt, start, end, lambda t: f'"{_attr(t)}"')
    after = found.get("src") or found.get("srcset")
    if after is not None:
        at = offset + (after.end(3) if after.group(3) is not None else after.end(1))
    else:
        at = offset + 1 + len(name.group(1))
    key = "ALT" if upper else "alt"
    return Slot(line, src, None, at, at, lambda t: f' {key}="{_attr(t)}"')


def _attr(text: str) -> str:
    return html.escape(text, quote=True)


def _first_srcset_url(srcset: str) -> str:
    candidate = srcset.strip().split(",")[0].strip()
    return candidate.split()[0] if candidate else ""


_FENCE = re.compile(
    r"^ {0,3}(`{3,}|~{3,})[^\n]*\n(?:.*?\n)?(?: {0,3}\1[`~]*[ \t]*(?:\n|\Z)|\Z)", re.M | re.S
)
_CODE_SPAN = re.compile(r"(?<![`\\])(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
_MD_IMAGE = re.compile(
    r"!\[(?P<alt>(?:[^\[\]\\\n]|\\.)*)\]"
    r"\(\s*(?P<dest><[^<>\n]*>|[^\s()<>]+)"
    r"(?:\s+(?P<title>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|\((?:[^()\\]|\\.)*\)))?\s*\)"
)


def _mask_code(text: str) -> str:
    """The text with fenced code blocks and code spans blanked (same length, same lines)."""

    def blank(m: re.Match[str]) -> str:
        return re.sub(r"[^\n]", " ", m.group(0))

    return _CODE_SPAN.sub(blank, _FENCE.sub(blank, text))


def markdown_slots(text: str) -> tuple[list[Slot], list[str]]:
    """``![alt](path "title")`` images and inline ``<img>`` tags of a Markdown text, outside
    code; reference-style images (``![alt][ref]``) are not edited."""
    masked = _mask_code(text)
    starts = _line_starts(text)
    slots = []
    for m in _MD_IMAGE.finditer(masked):
        line = _line_of(starts, m.start())
        dest = m.group("dest")
        src = dest[1:-1] if dest.startswith("<") else _md_unescape(dest)
        alt = _md_unescape(m.group("alt"))
        slots.append(Slot(line, src, alt, m.start("alt"), m.end("alt"), _md_escape))
    tags, notes = html_slots(masked)
    for slot in tags:  # positions from the masked text hold in the original
        slots.append(slot)
    slots.sort(key=lambda s: s.start)
    return slots, notes


def _line_of(starts: list[int], offset: int) -> int:
    import bisect

    return bisect.bisect_right(starts, offset)


def _md_escape(text: str) -> str:
    return re.sub(r"([\\\[\]`])", r"\\\1", text)


def _md_unescape(text: str) -> str:
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text)


def apply(text: str, edits: Sequence[tuple[Slot, str]]) -> str:
    """The text with each slot's span replaced by its rendering of the new alt text."""
    out, last = [], 0
    for slot, alt in sorted(edits, key=lambda e: e[0].start):
        out += [text[last : slot.start], slot.render(alt)]
        last = slot.end
    return "".join(out) + text[last:]


# ---------------------------------------------------------------- resolving image sources


def resolve_src(src: str, document: Path, site_root: Path | None) -> tuple[Path | None, str]:
    """A local image path for ``src`` (relative to the document), or None and why not."""
    if not src:
        return None, "no src"
    parts = urllib.parse.urlsplit(src)
    scheme = parts.scheme.lower()
    if src.startswith("//") or scheme in ("http", "https", "ftp"):
        return None, "remote URL skipped (no network)"
    if scheme == "data":
        return None, "inline data URI skipped"
    if scheme and not re.fullmatch(r"[a-z]", scheme):  # `c:` is a Windows drive, not a scheme
        return None, f"{scheme}: URL skipped"
    path = urllib.parse.unquote(parts.path if scheme == "" else src)
    if not path:
        return None, "no path in src"
    if path.startswith("/"):
        if site_root is None:
            return None, "site-root path skipped (pass --site-root)"
        return site_root / path.lstrip("/"), ""
    return document.parent / path, ""


# ---------------------------------------------------------------- the run


NEEDS_PERSON = "needs a person"


@dataclass
class Row:
    """One line of the report: a standalone image, or one image of a document."""

    file: str
    image: str = ""
    line: int | None = None
    status: str = ""  # captioned | filled | replaced | kept | needs a person | skipped | error
    alt: str = ""
    note: str = ""
    confidence: float | None = None  # of generated alt text (mmllm.confidence)


class Captioner:
    """Alt text per image path, from a model loaded on first use; failures kept per path."""

    def __init__(
        self,
        checkpoint: str | None,
        device: str | None,
        max_chars: int,
        batch_size: int,
        min_confidence: float | None = None,
        compile: bool | None = None,
    ):
        """``min_confidence``: alt text below it is not used (default: the threshold the
        checkpoint's calibration states, ``Calibration.alt_text_threshold``). ``compile``: as
        ``mmllm.load``'s (None: when the job pays for it)."""
        self.checkpoint, self.device, self.compile = checkpoint, device, compile
        self.max_chars, self.batch_size = max_chars, batch_size
        self.min_confidence = min_confidence
        self.model: Any = None
        self.done: dict[Path, Any] = {}  # a ScoredText (mmllm.tasks) or the error

    def below_note(self, result: Any) -> str:
        """Why ``result`` (an abstained ``ScoredText``) is not used."""
        return f"confidence {result.confidence:.2f} below {self.min_confidence:.2f}"

    def threshold_note(self) -> str:
        """How the threshold was set, for the summary."""
        if self.model is None:
            return ""
        if self.min_confidence is None:
            return "no confidence threshold (the checkpoint is not calibrated)"
        return f"confidence threshold {self.min_confidence:.2f}"

    def run(self, paths: Iterable[Path]) -> None:
        """Caption every path not done yet, a batch at a time; a bad file fails alone."""
        todo = list(dict.fromkeys(p for p in paths if p not in self.done))
        if not todo:
            return
        if self.model is None:
            self.model = load(self.checkpoint, device=self.device, compile=self.compile)
            calibration = self.model.calibration
            if self.min_confidence is None and calibration is not None:
                self.min_confidence = calibration.alt_text_threshold
        limit = self.min_confidence
        self.model.expect(len(todo))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            try:
                texts = self.model.alt_text(
                    chunk, self.max_chars, batch_size=self.batch_size, min_confidence=limit
                )
            except MMLLMError:  # find the bad one(s)
                texts = []
                for path in chunk:
                    try:
                        texts.append(
                            self.model.alt_text(path, self.max_chars, min_confidence=limit)
                        )
                    except MMLLMError as err:
                        texts.append(err)
            for path, text in zip(chunk, texts, strict=True):
                if isinstance(text, str) and not text.strip(" ."):
                    text = ValueError("the model produced no text")
                self.done[path] = text


def expand_inputs(patterns: Sequence[str]) -> tuple[list[Path], list[Row]]:
    """Files, folders and globs -> paths; bad ones as rows. A folder gives its HTML and Markdown
    files (sorted, recursively), or its images when it has no such document."""
    known = IMAGE_SUFFIXES | HTML_SUFFIXES | MARKDOWN_SUFFIXES
    paths: list[Path] = []
    bad: list[Row] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():  # its documents; its images when it has no document
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in known and p.is_file())
            documents = [p for p in found if p.suffix.lower() not in IMAGE_SUFFIXES]
            paths += documents or found
        elif any(c in pattern for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
            paths += [p for p in matches if p.suffix.lower() in known and p.is_file()]
            if not matches:
                bad.append(Row(pattern, status="error", note="no file matches this pattern"))
        elif not path.is_file():
            bad.append(Row(pattern, status="error", note="no such file"))
        elif path.suffix.lower() not in known:
            bad.append(Row(pattern, status="error", note="not an image, HTML or Markdown file"))
        else:
            paths.append(path)
    return list(dict.fromkeys(paths)), bad


@dataclass
class Change:
    """A document's planned edit."""

    path: Path
    old: str
    new: str


def plan_document(
    path: Path, captioner: Captioner, overwrite: bool, site_root: Path | None
) -> tuple[Change | None, list[Row]]:
    """Read a document, caption the images it needs, and plan its new text."""
    text = path.read_bytes().decode(*ENCODING)
    finder = html_slots if path.suffix.lower() in HTML_SUFFIXES else markdown_slots
    slots, notes = finder(text)
    rows = [Row(str(path), status="skipped", note=note) for note in notes]
    wanted: list[tuple[Slot, Path]] = []
    for slot in slots:
        has_alt = slot.alt is not None and slot.alt.strip() != ""
        if has_alt and not overwrite:
            rows.append(Row(str(path), slot.src, slot.line, "kept", slot.alt or ""))
            continue
        image, why = resolve_src(slot.src, path, site_root)
        if image is None:
            rows.append(Row(str(path), slot.src, slot.line, "skipped", slot.alt or "", why))
        elif not image.is_file():
            rows.append(
                Row(
                    str(path), slot.src, slot.line, "error", slot.alt or "", "local image not found"
                )
            )
        else:
            wanted.append((slot, image))
    captioner.run(image for _, image in wanted)
    edits = []
    for slot, image in wanted:
        result = captioner.done[image]
        if isinstance(result, Exception):
            rows.append(
                Row(str(path), slot.src, slot.line, "error", alt=slot.alt or "", note=str(result))
            )
            continue
        if result.abstained:  # never written: a person should describe this image
            note = captioner.below_note(result)
            rows.append(
                Row(
                    str(path),
                    slot.src,
                    slot.line,
                    NEEDS_PERSON,
                    alt=slot.alt or "",
                    note=note,
                    confidence=result.confidence,
                )
            )
            continue
        status = "replaced" if slot.alt and slot.alt.strip() else "filled"
        if slot.alt == result:
            status = "kept"
        else:
            edits.append((slot, result))
        rows.append(
            Row(str(path), slot.src, slot.line, status, alt=result, confidence=result.confidence)
        )
    rows.sort(key=lambda r: r.line or 0)
    new = apply(text, edits)
    return (Change(path, text, new) if new != text else None), rows


def unified_diff(change: Change) -> str:
    """The change as a unified diff (undecodable bytes shown as U+FFFD)."""
    name = str(change.path)
    old, new = (re.findall(r"[^\n]*\n|[^\n]+\Z", t) for t in (change.old, change.new))
    lines = difflib.unified_diff(old, new, name, name)
    text = "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )
    return text.encode(*ENCODING).decode("utf-8", "replace")


def backup_path(path: Path) -> Path:
    """``FILE.bak``, or the first free ``FILE.bak.N`` when it exists (never replaced)."""
    candidate = path.with_name(path.name + ".bak")
    n = 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.bak.{n}")
    return candidate


def write_atomic(path: Path, data: bytes, backup: bool = True) -> Path | None:
    """Replace ``path``'s content with ``data`` atomically; keep the old content as a backup.

    The new content goes to a temp file in the same folder, which ``os.replace`` moves over the
    original, so at every moment the file is either wholly old or wholly new. On any failure the
    temp file (and a backup made for this write) are removed and the original is untouched.
    Returns the backup's path. A symlink stays a link: its target is what is rewritten.
    """
    path = path.resolve()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    bak: Path | None = None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        if backup:
            bak = backup_path(path)
            with open(bak, "xb") as f:  # "x": fails rather than replace a file
                f.write(path.read_bytes())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if bak is not None:
            bak.unlink(missing_ok=True)
        raise
    return bak


def write_report(path: Path, rows: Sequence[Row]) -> None:
    """Rows as CSV or JSON (by suffix), written atomically."""
    records = [asdict(r) for r in rows]
    if path.suffix.lower() == ".json":
        data = json.dumps(records, indent=2, ensure_ascii=False) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[f for f in asdict(Row(""))])
        writer.writeheader()
        writer.writerows(records)
        data = buffer.getvalue()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or None)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(data)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    """The command: images -> alt text; documents -> filled alt text (diff, or --write)."""
    report = Path(args.report) if args.report else None
    if report is not None and report.suffix.lower() not in (".csv", ".json"):
        print(f"error: --report must end in .csv or .json, got {report.name!r}", file=sys.stderr)
        return EXIT_BAD_INPUT
    site_root = Path(args.site_root) if args.site_root else None
    paths, rows = expand_inputs(args.inputs)
    if not paths and not rows:
        rows.append(Row(" ".join(args.inputs), status="error", note="no input files found"))
    bad_input = bool(rows)
    captioner = Captioner(
        args.checkpoint,
        args.device,
        args.max_chars,
        args.batch_size,
        args.min_confidence,
        getattr(args, "compile", None),
    )
    images = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES]
    documents = [p for p in paths if p.suffix.lower() not in IMAGE_SUFFIXES]
    failed = False
    changes: list[Change] = []
    try:
        captioner.run(images)
        for path in images:
            result = captioner.done[path]
            if isinstance(result, Exception):
                rows.append(Row(str(path), str(path), status="error", note=str(result)))
            elif result.abstained:
                note = captioner.below_note(result)
                rows.append(
                    Row(
                        str(path),
                        str(path),
                        status=NEEDS_PERSON,
                        note=note,
                        confidence=result.confidence,
                    )
                )
            else:
                rows.append(
                    Row(
                        str(path),
                        str(path),
                        status="captioned",
                        alt=str(result),
                        confidence=result.confidence,
                    )
                )
        for path in documents:
            try:
                change, found = plan_document(path, captioner, args.overwrite, site_root)
            except OSError as err:
                rows.append(Row(str(path), status="error", note=f"cannot read: {err.strerror}"))
                continue
            rows += found
            if change is not None:
                changes.append(change)
    except MMLLMError as err:  # e.g. the checkpoint: nothing can be captioned
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(err, ValueError) else EXIT_ERROR
    bad_input |= any(r.status == "error" for r in rows)

    written = 0
    for change in changes:
        if not args.write:
            sys.stdout.write(unified_diff(change))
            continue
        try:
            bak = write_atomic(change.path, change.new.encode(*ENCODING))
            written += 1
            plain = change.path.with_name(change.path.name + ".bak")
            if bak is not None and bak != plain:
                print(
                    f"note: {plain} exists and was kept; backup written to {bak}", file=sys.stderr
                )
        except OSError as err:
            failed = True
            print(f"error: could not write {change.path}: {err}", file=sys.stderr)

    _print_images(rows, images, args.json)
    for row in rows:
        if row.status in ("error", "skipped", NEEDS_PERSON):
            where = f"{row.file}:{row.line}" if row.line else row.file
            what = f" {row.image}" if row.image and row.image != row.file else ""
            print(f"{row.status}: {where}{what}: {row.note}", file=sys.stderr)
    if report is not None:
        try:
            write_report(report, rows)
        except OSError as err:
            failed = True
            print(f"error: could not write the report {report}: {err}", file=sys.stderr)
    summary = _summary(rows, images, documents, changes, written, args.write)
    print(f"{summary}; {captioner.threshold_note()}".rstrip("; "), file=sys.stderr)
    if failed:
        return EXIT_ERROR
    return EXIT_BAD_INPUT if bad_input else EXIT_OK


def _print_images(rows: Sequence[Row], images: Sequence[Path], as_json: bool) -> None:
    """Standalone images' alt text on stdout: text (one image), ``file<TAB>text``, or JSON."""
    mine = [r for r in rows if r.image and r.image == r.file and r.status == "captioned"]
    if as_json:
        print(json.dumps([{"file": r.file, "text": r.alt} for r in mine], indent=2))
        return
    for row in mine:
        print(row.alt if len(images) == 1 else f"{row.file}\t{row.alt}")


def _summary(rows, images, documents, changes, written: int, write: bool) -> str:
    count = {
        s: sum(r.status == s for r in rows)
        for s in ("captioned", "filled", "replaced", "kept", "skipped", "error", NEEDS_PERSON)
    }
    parts = [f"{count['captioned']} of {len(images)} image(s) captioned"] if images else []
    if documents:
        verb = "changed" if write else "would change"
        parts.append(
            f"{len(documents)} document(s), {verb}: {written if write else len(changes)} "
            f"(alt text filled {count['filled']}, replaced {count['replaced']}, kept "
            f"{count['kept']}, skipped {count['skipped']})"
        )
    parts.append(f"needs a person: {count[NEEDS_PERSON]}")
    parts.append(f"errors: {count['error']}")
    if documents and changes and not write:
        parts.append("dry run: pass --write to apply")
    return "summary: " + "; ".join(parts)


def add_compile_flag(parser: argparse.ArgumentParser) -> None:
    """``--compile`` / ``--no-compile`` (default None: compiled when the job pays for it)."""
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compiled decoding (a C++ compiler on the CPU): --compile always, --no-compile "
        "never; by default only for jobs large enough to pay for the compile",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments (``mmllm alt-text``, ``python demos/alt_text.py``)."""
    parser.add_argument(
        "inputs", nargs="+", help="images, HTML or Markdown files, folders or globs"
    )
    parser.add_argument("--report", default=None, help="write every result to a .csv or .json")
    parser.add_argument(
        "--write",
        action="store_true",
        help="edit documents in place (default: dry run, print a diff)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing non-empty alt text too"
    )
    parser.add_argument(
        "--site-root", default=None, help="folder that src='/...' paths are relative to"
    )
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        help="alt text below this confidence (0-1) is never written; the image is listed as "
        "'needs a person' (default: the threshold the checkpoint's calibration states)",
    )
    parser.add_argument("--max-chars", type=int, default=125)
    parser.add_argument("--batch-size", type=int, default=8)
    add_compile_flag(parser)
    parser.add_argument("--checkpoint", default=None, help="folder or shipped name (mmllm-tiny)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: best)")
    parser.add_argument("--json", action="store_true", help="print images' alt text as JSON")


def build_parser(prog: str = "mmllm alt-text") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)
