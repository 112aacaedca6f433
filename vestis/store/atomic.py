"""Crash-safe file writes: write aside, fsync, rename into place, fsync the directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then atomically replace ``path`` with the result.

    A crash at any point leaves either the old file or the new one, never a torn file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda p: p.write_bytes(data))


def fsync_tree(directory: Path) -> None:
    """fsync every file below ``directory`` and the directory itself (before renaming it into use)."""
    for root, _dirs, files in os.walk(directory):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(root))


def atomic_write_dir(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_dir)`` on an empty folder beside ``path``, fsync it, then rename it to
    ``path`` (replacing an older one). A crash leaves the old folder or a ``.NAME.tmp`` orphan; an
    error in ``write`` removes the folder."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        fsync_tree(tmp)
    except BaseException:  # a failed write (a full disk) leaves no orphan behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    fsync_dir(path.parent)
