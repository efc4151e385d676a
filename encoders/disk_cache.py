"""The on-disk cache of base models converted from the formats packages ship them in.

A base model read from a package (a GGUF language model, Whisper's CTranslate2 weights with an
adapter merged in) is converted once, then read from here: safetensors files, memory-mapped
when loaded. Each entry is named by what it is and by the sha256 of the files it was made from,
so a changed source makes a new entry. An entry is built in a temporary file or folder and
renamed into place, so two processes filling the cache at once never see half an entry. The
compiled code of ``torch.compile`` (inductor's own cache) lives here too, under ``inductor/``.

Where: ``$MMLLM_CACHE``, else the platform's user cache folder (``platformdirs``: e.g.
``~/.cache/mmllm`` on Linux). ``mmllm cache info`` lists it, ``mmllm cache clear`` empties it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import platformdirs

CACHE_ENV = "MMLLM_CACHE"
INDUCTOR_FOLDER = "inductor"
# hashes of source files, by path, size and modification time: a 100 MB file is read once
DIGESTS_FOLDER = "digests"


def cache_root() -> Path:
    """``$MMLLM_CACHE``, else the platform's user cache folder for mmllm."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(platformdirs.user_cache_dir("mmllm", appauthor=False))


def file_digest(*files: Path) -> str:
    """The first 16 hex digits of the sha256 over ``files``' bytes, in order. Each file's own
    hash is remembered under the cache by its path, size and modification time."""
    combined = hashlib.sha256()
    for file in files:
        combined.update(_one_digest(Path(file)).encode())
    return combined.hexdigest()[:16]


def _one_digest(file: Path) -> str:
    stat = file.stat()
    key = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    memo = cache_root() / DIGESTS_FOLDER / hashlib.sha256(key.encode()).hexdigest()[:24]
    with contextlib.suppress(OSError):
        return memo.read_text().strip()
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    with contextlib.suppress(OSError):  # a read-only cache still works, only slower
        write_atomically(memo, lambda path: path.write_text(value))
    return value


def write_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Make ``target`` (a file or a folder) by ``build(temporary path)`` in the same folder,
    then rename it into place; if another process made it first, keep theirs."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        built = work / "entry"
        build(built)
        try:
            os.replace(built, target)  # a file replaces; a folder fails if one is there
        except OSError:  # a folder another process renamed into place first
            if not target.exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def cached(name: str, build: Callable[[Path], None]) -> Path:
    """The cache entry ``name`` (a file or folder), made by ``build(path)`` if it is missing."""
    target = cache_root() / name
    if target.exists():
        return target
    return write_atomically(target, build)


def use_for_inductor() -> None:
    """Keep ``torch.compile``'s compiled code in this cache (unless ``TORCHINDUCTOR_CACHE_DIR``
    says otherwise), so a later process reuses it and ``mmllm cache clear`` removes it."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / INDUCTOR_FOLDER))


@dataclass(frozen=True)
class Entry:
    name: str
    bytes: int


def entries() -> list[Entry]:
    """Every entry of the cache with its size on disk, largest first."""
    root = cache_root()
    if not root.is_dir():
        return []
    found = [Entry(p.name, _size(p)) for p in root.iterdir() if not p.name.startswith(".")]
    return sorted(found, key=lambda e: -e.bytes)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def clear() -> int:
    """Remove every entry of the cache; returns the bytes freed."""
    freed = 0
    root = cache_root()
    if not root.is_dir():
        return 0
    for path in root.iterdir():
        freed += _size(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return freed
