"""The real-photo export: the Qt resource reader on bundles written here (qres v1 and v3), the
label -> nouns table, and the record builder on fake in-memory photos. Fast and offline; the one
test on Debian's gcompris bundles skips where the package is missing."""

import json
import re
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from mmllm.data.qt_resources import read_rcc, read_rcc_bytes
from mmllm.data.real_photos import (
    GCOMPRIS_RCC_DIRS,
    NEGATIVE_GROUPS,
    SENSES,
    Photo,
    build_records,
    expand_label,
    normalize_label,
)
from mmllm.errors import DataError


def write_qres(files: dict[str, tuple[bytes, bool]], version: int) -> bytes:
    """A minimal Qt resource bundle: ``files`` maps a path to (content, zlib-compress it)."""
    tree: dict = {}
    for path, entry in files.items():
        node = tree
        *dirs, leaf = path.split("/")
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = entry
    names, data = bytearray(), bytearray()
    name_offsets: dict[str, int] = {}

    def name_offset(name: str) -> int:
        if name not in name_offsets:
            name_offsets[name] = len(names)
            encoded = name.encode("utf-16-be")
            names.extend(struct.pack(">HI", len(name), 0) + encoded)
        return name_offsets[name]

    # breadth first: each directory's children are consecutive nodes
    nodes: list[bytes] = []
    queue: list[tuple[str, object]] = [("", tree)]
    index = 0
    next_free = 1
    while index < len(queue):
        name, item = queue[index]
        offset = name_offset(name) if index else 0
        extra = b"\0" * 8 if version >= 2 else b""
        if isinstance(item, dict):
            children = sorted(item.items())
            node = struct.pack(">IHII", offset, 0x02, len(children), next_free) + extra
            queue.extend(children)
            next_free += len(children)
        else:
            content, compress = item
            payload = (
                struct.pack(">I", len(content)) + zlib.compress(content) if compress else content
            )
            data_offset = len(data)
            data.extend(struct.pack(">I", len(payload)) + payload)
            node = struct.pack(">IHHHI", offset, 0x01 if compress else 0, 0, 0, data_offset) + extra
        nodes.append(node)
        index += 1
    header_size = 24 if version >= 3 else 20
    data_off = header_size
    names_off = data_off + len(data)
    tree_off = names_off + len(names)
    header = b"qres" + struct.pack(">IIII", version, tree_off, data_off, names_off)
    if version >= 3:
        header += struct.pack(">I", 0)
    return header + bytes(data) + bytes(names) + b"".join(nodes)


FILES = {
    "act/resource/README": (b"Copyright: someone\nLicense: CC0-1.0\n", False),
    "act/resource/images/fish1.webp": (b"\x00\x01fishy bytes" * 50, True),
    "act/top.qml": ("import QtQuick 2.12 // é".encode(), False),
}


@pytest.mark.parametrize("version", [1, 3])
def test_read_rcc_round_trip(tmp_path, version):
    path = tmp_path / "bundle.rcc"
    path.write_bytes(write_qres(FILES, version))
    assert read_rcc(path) == {k: v for k, (v, _) in FILES.items()}


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b"qrez" + b[4:], "magic"),
        (lambda b: b[:4] + struct.pack(">I", 9) + b[8:], "version"),
        (lambda b: b[:8] + struct.pack(">I", 10**9) + b[12:], "outside the file"),
        (lambda b: b[:-10], "past the end"),
        (lambda b: b[:10], "header"),
    ],
)
def test_read_rcc_malformed(tmp_path, mangle, message):
    blob = mangle(write_qres(FILES, 3))
    with pytest.raises(DataError, match=message):
        read_rcc_bytes(blob, "bad.rcc")


def test_read_rcc_bad_zlib_and_missing_file(tmp_path):
    blob = bytearray(write_qres({"a.txt": (b"hello world" * 20, True)}, 1))
    blob[20 + 4 + 4 + 2] ^= 0xFF  # inside the zlib stream
    with pytest.raises(DataError, match=r"bad\.rcc"):
        read_rcc_bytes(bytes(blob), "bad.rcc")
    with pytest.raises(DataError, match="cannot read"):
        read_rcc(tmp_path / "missing.rcc")


def test_labels_and_nouns():
    assert normalize_label("measuringTape3") == "measuring tape"
    assert normalize_label("Château de Chambord") == "chateau de chambord"
    assert normalize_label("Taj Mahal, India") == "taj mahal"
    assert normalize_label("basketball-court1-a") == "basketball court"
    assert expand_label("fish")[1] == ["fish"]
    assert expand_label("cat")[1][:2] == ["cat", "kitten"]
    assert expand_label("eiffel tower", proper=True)[1] == ["eiffel tower", "tower"]
    assert expand_label("beach malibu")[1] == ["beach", "sea", "ocean", "shore", "coast"]
    sense, nouns = expand_label("statue of liberty", proper=True)
    assert nouns == ["statue of liberty", "statue", "sculpture"] and sense.kind == "object"
    assert expand_label("christ the redeemer", proper=True)[1][0] == "christ the redeemer"
    assert expand_label("solar") == (None, [])
    # the rule: category words are never nouns
    every = {n for s in SENSES.values() for n in s.nouns}
    assert not every & {"tool", "animal", "monument", "furniture", "vehicle", "plant"}
    assert all(n == n.lower() for n in every)


def _fake(source, name, label, proper=False):
    photo = Photo(source, name, label, lambda: Image.new("RGB", (8, 8)), proper=proper)
    photo.sense, photo.nouns = expand_label(label, proper)
    return photo


def test_build_records_schema():
    photos = [
        _fake("a", "hammer", "hammer"),
        _fake("a", "fish", "fish"),
        _fake("b", "giraffe", "giraffe"),
        _fake("b", "tower", "eiffel tower", proper=True),
        _fake("c", "beach", "beach"),
        _fake("c", "kitchen", "kitchen"),
    ]
    paths = {p.id: f"images/{p.id}.jpg" for p in photos}
    records = build_records(photos, paths, seed=3)
    assert records == build_records(photos, paths, seed=3)  # deterministic
    assert len(records) == 3 * len(photos)
    json.dumps(records)
    by_id: dict[str, list[dict]] = {}
    for r in records:
        by_id.setdefault(r["id"], []).append(r)
    yes = 0
    for photo in photos:
        caption, open_q, is_there = by_id[photo.id]
        assert caption == {
            "id": photo.id,
            "image": paths[photo.id],
            "task": "caption",
            "caption": caption["caption"],
            "nouns": photo.nouns,
            "category": f"photo/{photo.source}",
        }
        assert set(open_q) == {"id", "image", "task", "question", "answer", "answers"} | {
            "qtype",
            "category",
        }
        assert open_q["answer"] == photo.nouns[0] and open_q["answers"] == photo.nouns
        assert is_there["qtype"] == "is_there" and is_there["answers"] == [is_there["answer"]]
        noun = re.fullmatch(r"is there an? (.+) in the picture\?", is_there["question"]).group(1)
        if is_there["answer"] == "yes":
            yes += 1
            assert noun == photo.nouns[0]
        else:
            assert is_there["answer"] == "no" and noun not in photo.nouns
            other = next(sense for sense in SENSES.values() if sense.nouns[0] == noun)
            assert other.group in NEGATIVE_GROUPS[photo.sense.group]
    assert yes == 3
    qtypes = {r["id"]: r["qtype"] for r in records if r.get("qtype", "").startswith("what")}
    assert qtypes["b/giraffe"] == "what_animal" and qtypes["c/beach"] == "what_place"
    assert qtypes["a/hammer"] == "what_object"


@pytest.mark.skipif(
    not any((Path(d) / "categorization.rcc").is_file() for d in GCOMPRIS_RCC_DIRS),
    reason="Debian gcompris-qt-data is not installed",
)
def test_real_gcompris_bundle():
    rcc = next(Path(d) for d in GCOMPRIS_RCC_DIRS if (Path(d) / "categorization.rcc").is_file())
    files = read_rcc(rcc / "categorization.rcc")
    photos = [p for p in files if p.endswith(".webp")]
    assert len(photos) > 100
    assert any(p.endswith("/README") for p in files)
