"""What keeps writing a collection safe and its failures clear: one indexer at a time (a lock
file in the collection folder), and a full disk reported in one line instead of a traceback."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from vestis.errors import VestisError

LOCK_NAME = "index.lock"
_LOW_SPACE_BYTES = 1024 * 1024  # an I/O error with less free space than this is the disk being full
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")  # NumPy's tofile when the disk fills (no errno)
RESUME_ADVICE = "run the same command again: it resumes where this run stopped, and every item committed so far is kept"


class CollectionBusyError(VestisError):
    """Another process is indexing into the same collection."""


class DiskFullError(VestisError):
    """The disk holding a collection filled up during a write."""


@contextmanager
def indexing_lock(path: Path | str, *, wait: bool = True,
                  notify: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the collection's indexing lock (``flock`` on ``<path>/index.lock``, created with the
    folder) while the block runs. When another process holds it, ``wait`` blocks until it is
    released, after telling ``notify`` who holds it; ``wait=False`` raises CollectionBusyError.
    The lock goes with its process, so a killed indexer never leaves a stale one."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        f = open(folder / LOCK_NAME, "a+")  # noqa: SIM115 - closed below, which releases the lock
    except OSError as e:
        raise VestisError(f"cannot use {folder} as a collection folder ({e.strerror or e})") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            if not wait:
                raise CollectionBusyError(
                    f"{folder} is being indexed by another process (pid {holder}); run again when it is "
                    "done, or without --no-wait to wait for it") from None
            if notify is not None:
                notify(f"{folder} is being indexed by another process (pid {holder}); waiting for it to finish")
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()


def is_disk_full(error: BaseException, path: Path | str) -> bool:
    """Whether ``error`` (from SQLite or a file write under ``path``) means the disk is full."""
    if isinstance(error, sqlite3.OperationalError):
        message = str(error)
        if "disk is full" in message:  # SQLITE_FULL: "database or disk is full"
            return True
        if "disk I/O error" not in message:
            return False
    elif not isinstance(error, OSError):
        return False
    elif error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    elif error.errno is None and _SHORT_WRITE.search(str(error)):
        return True
    try:  # an I/O error with the disk (nearly) full: SQLite reports a failed WAL append this way
        return shutil.disk_usage(path).free < _LOW_SPACE_BYTES
    except OSError:
        return False


@contextmanager
def disk_full_errors(path: Path | str, advice: str = RESUME_ADVICE) -> Iterator[None]:
    """Turn a full disk during the block's writes under ``path`` into one DiskFullError that says
    to free some space and then ``advice``; every other error passes through unchanged."""
    try:
        yield
    except (sqlite3.OperationalError, OSError) as e:
        if not is_disk_full(e, path):
            raise
        raise DiskFullError(f"the disk holding {path} is full ({e}). Free some space and {advice}") from None
