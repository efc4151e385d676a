"""A reader for Qt's compiled resource bundles (``.rcc``, the binary "qres" format, versions 1-3).

Layout (all integers big-endian)::

    header   "qres", version (4), tree offset (4), data offset (4), names offset (4)
             [version 3: format flags (4)]
    tree     one node per file or directory, node 0 the root directory:
             name offset (4), flags (2), then
               directory: child count (4), index of the first child node (4)
               file:      territory (2), language (2), data offset (4)
             [version >= 2: last modified, ms since the epoch (8)]
    names    at names offset + name offset: length in UTF-16 units (2), hash (4), UTF-16BE name
    data     at data offset + data offset: length (4), payload; flag 0x01: the payload is
             ``qCompress`` output (uncompressed size (4), zlib stream); flag 0x04: a zstd frame

``read_rcc(path)`` returns every file (of files with per-locale variants, the default-locale
one, else the first) as ``{"dir/sub/name.ext": bytes}``. Anything that does not
fit (a bad magic, an offset past the end, a loop in the tree, a bad compressed stream) raises
:class:`mmllm.errors.DataError` naming the file and what broke.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from mmllm.errors import DataError

MAGIC = b"qres"
FLAG_COMPRESSED = 0x01
FLAG_DIRECTORY = 0x02
FLAG_COMPRESSED_ZSTD = 0x04
MAX_NODES = 1_000_000
MAX_FILE_BYTES = 1 << 30


def _zstd_decompress(payload: bytes) -> bytes:
    try:  # Python 3.14+
        from compression import zstd  # type: ignore[import-not-found]

        return zstd.decompress(payload)
    except ImportError:
        pass
    try:
        import zstandard
    except ImportError as e:
        raise DataError(
            "a zstd-compressed Qt resource needs the 'zstandard' package "
            "(pip install zstandard, or mmllm[data])"
        ) from e
    # frames written by rcc may lack the content size, so stream instead of one-shot
    return zstandard.ZstdDecompressor().decompressobj().decompress(payload)


class _Reader:
    def __init__(self, blob: bytes, name: str) -> None:
        self.blob = blob
        self.name = name

    def fail(self, what: str) -> DataError:
        return DataError(f"{self.name}: malformed Qt resource bundle: {what}")

    def unpack(self, fmt: str, offset: int, what: str) -> tuple:
        size = struct.calcsize(fmt)
        if offset < 0 or offset + size > len(self.blob):
            raise self.fail(f"{what} at byte {offset} runs past the end ({len(self.blob)} bytes)")
        return struct.unpack_from(fmt, self.blob, offset)


def read_rcc_bytes(blob: bytes, name: str = "<rcc>") -> dict[str, bytes]:
    """Parse a bundle held in memory; ``name`` is used in error messages."""
    r = _Reader(blob, name)
    if blob[:4] != MAGIC:
        raise r.fail(f"no 'qres' magic (starts with {blob[:4]!r})")
    if len(blob) < 20:
        raise r.fail(f"header cut short ({len(blob)} bytes)")
    version, tree_off, data_off, names_off = r.unpack(">IIII", 4, "header")
    if version not in (1, 2, 3):
        raise r.fail(f"unsupported format version {version} (expected 1, 2 or 3)")
    header_size = 24 if version >= 3 else 20
    if len(blob) < header_size:
        raise r.fail("header cut short")
    for label, off in (("tree", tree_off), ("data", data_off), ("names", names_off)):
        if not header_size <= off <= len(blob):
            raise r.fail(f"{label} offset {off} outside the file ({len(blob)} bytes)")
    node_size = 14 if version == 1 else 22

    def node_offset(index: int) -> int:
        if not 0 <= index < MAX_NODES:
            raise r.fail(f"node index {index} out of range")
        return tree_off + index * node_size

    def read_name(name_off: int) -> str:
        at = names_off + name_off
        (length,) = r.unpack(">H", at, "name length")
        start = at + 6
        end = start + 2 * length
        if end > len(blob):
            raise r.fail(f"name at byte {at} runs past the end")
        try:
            text = blob[start:end].decode("utf-16-be")
        except UnicodeDecodeError as e:
            raise r.fail(f"name at byte {at} is not UTF-16: {e}") from e
        if not text or "/" in text or text in (".", ".."):
            raise r.fail(f"bad entry name {text!r} at byte {at}")
        return text

    def read_data(flags: int, rel: int, path: str) -> bytes:
        at = data_off + rel
        (length,) = r.unpack(">I", at, f"data length of {path}")
        start, end = at + 4, at + 4 + length
        if end > len(blob):
            raise r.fail(f"data of {path} ({length} bytes at {start}) runs past the end")
        payload = blob[start:end]
        if flags & FLAG_COMPRESSED:
            if length < 4:
                raise r.fail(f"compressed data of {path} too short")
            (expected,) = struct.unpack_from(">I", payload, 0)
            if expected > MAX_FILE_BYTES:
                raise r.fail(f"{path} claims {expected} uncompressed bytes")
            try:
                out = zlib.decompress(payload[4:])
            except zlib.error as e:
                raise r.fail(f"bad zlib stream for {path}: {e}") from e
            if len(out) != expected:
                raise r.fail(f"{path}: {len(out)} bytes uncompressed, header says {expected}")
            return out
        if flags & FLAG_COMPRESSED_ZSTD:
            try:
                return _zstd_decompress(payload)
            except DataError:
                raise
            except Exception as e:  # zstandard.ZstdError, compression.zstd.ZstdError
                raise r.fail(f"bad zstd stream for {path}: {e}") from e
        return payload

    files: dict[str, bytes] = {}
    seen: set[int] = set()
    # (node index, path prefix); the root's own name is ignored
    stack: list[tuple[int, str]] = [(0, "")]
    while stack:
        index, path = stack.pop()
        if index in seen:
            raise r.fail(f"node {index} is reached twice (a loop in the tree)")
        seen.add(index)
        off = node_offset(index)
        name_off, flags = r.unpack(">IH", off, f"node {index}")
        if index == 0:
            if not flags & FLAG_DIRECTORY:
                raise r.fail("the root node is not a directory")
            full = ""
        else:
            full = f"{path}/{read_name(name_off)}" if path else read_name(name_off)
        if flags & FLAG_DIRECTORY:
            count, first = r.unpack(">II", off + 6, f"directory node {index}")
            if count > MAX_NODES or first + count > MAX_NODES:
                raise r.fail(f"directory node {index} claims {count} children from {first}")
            if count and node_offset(first + count) > len(blob):
                raise r.fail(f"children of node {index} run past the end")
            stack.extend((child, full) for child in range(first + count - 1, first - 1, -1))
        else:
            territory, language, rel = r.unpack(">HHI", off + 6, f"file node {index}")
            if full in files and (territory or language):
                continue  # a translated variant of a file already read: keep the default one
            files[full] = read_data(flags, rel, full)
    return files


def read_rcc(path: str | Path) -> dict[str, bytes]:
    """Every file in the Qt resource bundle at ``path``: its path inside the bundle -> bytes."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read Qt resource bundle: {e}") from e
    return read_rcc_bytes(blob, str(path))
