"""JSONL datasets in the DESIGN format: one record per line, media paths relative to the file.

    {"image": "img/1.png", "task": "vqa", "question": "what color is the circle?", "answer": "red"}
    {"audio": "clips/7.wav", "task": "caption", "caption": "three short high beeps"}
    {"image": ["a.png", "b.png"], "audio": "c.wav", "task": "vqa", "question": "?", "answer": "."}

Every record is checked when the file is read; a bad one raises ``DataError`` naming the file
and line. Optional ``category``/``qtype`` fields are kept for per-category evaluation;
``answers`` (a question's acceptable answers) and ``nouns`` (a caption's acceptable main nouns)
for real photos, where any one of them is right; ``recognitions`` (per image, the rows of
``encoders.recognizers``) spare a training run from running the recognizers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmllm.data.collate import Record
from mmllm.errors import DataError
from mmllm.prompts import IMAGE_CAPTION_PROMPT, caption_prompt  # noqa: F401  (re-exported)

KNOWN_KEYS = {
    "image",
    "audio",
    "task",
    "question",
    "answer",
    "caption",
    "category",
    "qtype",
    "id",
    "answers",
    "nouns",
    "recognitions",
}


def read_jsonl(path: str | Path) -> list[Record]:
    """All records of ``path``; raises ``DataError`` ("file:line: problem") on the first bad one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    records = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: invalid JSON ({err.msg})") from err
            records.append(parse_record(data, path.parent, where))
    if not records:
        raise DataError(f"{path}: no records")
    return records


def parse_record(data: Any, root: Path, where: str) -> Record:
    if not isinstance(data, dict):
        raise DataError(f"{where}: a record must be a JSON object")
    unknown = sorted(set(data) - KNOWN_KEYS)
    if unknown:
        raise DataError(f"{where}: unknown keys {unknown}")
    images = _paths(data.get("image"), root, where, "image")
    audio = _paths(data.get("audio"), root, where, "audio")
    if not images and not audio:
        raise DataError(f"{where}: a record needs an 'image' or 'audio'")
    task = data.get("task")
    if task == "vqa":
        prompt, target = _text(data, "question", where), _text(data, "answer", where)
    elif task == "caption":
        prompt, target = caption_prompt(bool(images)), _text(data, "caption", where)
    else:
        raise DataError(f"{where}: 'task' must be 'vqa' or 'caption', got {task!r}")
    accept = _words(data.get("answers" if task == "vqa" else "nouns"), where)
    recognitions = data.get("recognitions") or []
    if recognitions and (
        not isinstance(recognitions, list)
        or len(recognitions) != len(images)
        or not all(_is_rows(r) for r in recognitions)
    ):
        raise DataError(
            f"{where}: 'recognitions' must hold one list of [label, score, x1, y1, x2, y2] "
            "rows per image"
        )
    return Record(
        prompt=prompt,
        target=target,
        images=images,
        audio=audio,
        task=task,
        category=data.get("category"),
        qtype=data.get("qtype"),
        source=where,
        recognitions=recognitions,
        accept=accept,
    )


def _words(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(w, str) and w.strip() for w in value):
        raise DataError(f"{where}: 'answers'/'nouns' must be a list of non-empty strings")
    return [w.strip() for w in value]


def _is_rows(rows: Any) -> bool:
    return isinstance(rows, list) and all(
        isinstance(r, list) and len(r) == 6 and all(isinstance(v, (int, float)) for v in r)
        for r in rows
    )


def _paths(value: Any, root: Path, where: str, key: str) -> list[Path]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    paths = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise DataError(f"{where}: '{key}' must be a path or a list of paths")
        path = root / item
        if not path.is_file():
            raise DataError(f"{where}: {key} file {item!r} not found (relative to {root.name}/)")
        paths.append(path)
    return paths


def _text(data: dict, key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: '{key}' must be a non-empty string")
    return value.strip()
