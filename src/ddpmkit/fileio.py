"""Atomic file writes: a file is either its old self or complete, never half-written, whatever kills the writer."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path


def default_cache_dir() -> Path:
    """$DDPMKIT_CACHE, or ~/.cache/ddpmkit: the one place for every cache (FID statistics, decoded images)."""
    env = os.environ.get("DDPMKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ddpmkit"


def fsync_dir(path: str | Path) -> None:
    """fsync a folder, so a rename inside it survives a power cut (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False):
    """Yield a temporary path beside `path` for any writer; when the block succeeds, rename it over `path`.

    The temporary name keeps the suffix (Pillow, matplotlib and NumPy infer the format from it) and starts with a
    dot. On an exception the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
