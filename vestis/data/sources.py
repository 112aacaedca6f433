"""Where an item's encoded image bytes live: source URIs, and the folder/zip containers readers use.

URIs (see :mod:`vestis.data.base`): a plain path, ``zip:/abs/archive.zip::member`` or
``idx:/abs/file-idx3-ubyte.gz::N``. :func:`read_source` serves all three and is called many
times by the web server and the indexer, so it keeps open zip handles (one per thread, since a
``ZipFile`` shares a single file position) and decoded IDX arrays (a few, least recently used).
Both caches notice when a file changes (size or mtime) and reopen it.

Readers walk a dataset through :class:`Folder` or :class:`Archive`, which expose the same calls
(find a label file, open it as text, make an item for a member), so every reader accepts a
folder or a zip of that folder.
"""

from __future__ import annotations

import functools
import gzip
import io
import logging
import math
import os
import stat
import threading
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np
from PIL import Image

from vestis.data.base import CatalogueItem
from vestis.errors import CatalogueError

log = logging.getLogger(__name__)

ZIP_SCHEME = "zip:"
IDX_SCHEME = "idx:"
SEPARATOR = "::"

# Reading an image never takes more memory than this, whatever a file or a zip member claims.
MAX_SOURCE_BYTES = 256 * 1024 * 1024
# Encoded images barely compress; a zip member that inflates more than this many times is refused
# unread (a zip bomb), unless it is small enough to be harmless.
MAX_ZIP_RATIO = 100
ZIP_RATIO_MIN_BYTES = 1024 * 1024
# Label tables (CSV, JSONL, DeepFashion's list files) are read line by line, so memory stays small
# whatever their size; these bounds keep a hostile table from costing unbounded time or memory.
# DeepFashion's largest list file is about 0.9 GB and deflates about 180 times; longer lines than
# MAX_LINE_CHARS hold no table (the longest CSV field read is 4 Mi characters).
MAX_TABLE_BYTES = 2 * 1024 * 1024 * 1024
MAX_TABLE_ZIP_RATIO = 500
MAX_LINE_CHARS = 8 * 1024 * 1024
# An IDX file holds a whole split (Fashion-MNIST's largest inflates to 47 MB); it is inflated as a
# stream, never past the size its header declares, and refused unread when that is above this.
MAX_IDX_BYTES = 256 * 1024 * 1024

# IDX type codes (third magic byte) -> big-endian NumPy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def zip_uri(archive: str | Path, member: str) -> str:
    """The source URI of ``member`` inside the zip ``archive`` (made absolute)."""
    path = os.path.abspath(archive)
    if SEPARATOR in path:
        raise CatalogueError(f"{path}: an archive path may not contain {SEPARATOR!r}")
    return f"{ZIP_SCHEME}{path}{SEPARATOR}{member}"


def idx_uri(path: str | Path, n: int) -> str:
    """The source URI of image ``n`` (0-based) of an IDX image file (made absolute)."""
    return f"{IDX_SCHEME}{os.path.abspath(path)}{SEPARATOR}{n}"


def file_stamp(path: str | Path) -> str:
    """Cheap change signature of a file: ``size:mtime_ns``."""
    return _stamp(_stat(path))


def _stamp(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}"


def _stat(path: str | Path) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise CatalogueError(f"{path}: no such file") from None
    except OSError as e:
        raise CatalogueError(f"{path}: cannot read ({e.strerror or e})") from None


class _ThreadZips(threading.local):
    def __init__(self) -> None:
        self.handles: dict[str, tuple[tuple[int, int], zipfile.ZipFile]] = {}


_ZIPS = _ThreadZips()


def zip_archive(path: str | Path) -> zipfile.ZipFile:
    """This thread's open handle on the zip at ``path``, reopened if the file changed."""
    key = os.path.abspath(path)
    st = _stat(key)
    signature = (st.st_size, st.st_mtime_ns)
    cached = _ZIPS.handles.get(key)
    if cached is not None and cached[0] == signature:
        return cached[1]
    if cached is not None:
        cached[1].close()
    try:
        handle = zipfile.ZipFile(key)
    except (zipfile.BadZipFile, OSError) as e:
        raise CatalogueError(f"{key}: not a readable zip archive ({e})") from None
    _ZIPS.handles[key] = (signature, handle)
    return handle


def check_zip_member(info: zipfile.ZipInfo, archive: str | Path, *, table: bool = False) -> None:
    """Refuse, before inflating a byte, a member whose declared size is over the read limit or
    whose compression ratio only a zip bomb has (the limits of an image, or of a label ``table``)."""
    name = f"{archive}: member {info.filename!r}"
    what, limit, ratio = ("a label table", MAX_TABLE_BYTES, MAX_TABLE_ZIP_RATIO) if table else \
        ("an image", MAX_SOURCE_BYTES, MAX_ZIP_RATIO)
    if info.file_size > limit:
        raise CatalogueError(f"{name} is {info.file_size:,} bytes uncompressed; the limit for {what} is "
                             f"{limit:,} bytes (skipped unread)")
    if info.file_size > ZIP_RATIO_MIN_BYTES and info.file_size > ratio * max(info.compress_size, 1):
        raise CatalogueError(f"{name} inflates {info.file_size / max(info.compress_size, 1):,.0f} times "
                             f"({info.compress_size:,} to {info.file_size:,} bytes): a zip bomb, not {what} "
                             f"(skipped unread; the limit is {ratio} times)")


class BoundedText(io.TextIOBase):
    """A label table opened as text, read line by line: a line longer than :data:`MAX_LINE_CHARS`
    or a table longer than :data:`MAX_TABLE_BYTES` characters raises CatalogueError naming it,
    so neither a file without newlines nor an endless one fills memory."""

    def __init__(self, f: TextIO, name: str) -> None:
        super().__init__()
        self._f = f
        self.name = name
        self._chars = 0
        self._lines = 0

    def readable(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> str:
        line = self._f.readline(MAX_LINE_CHARS + 1)
        self._lines += 1
        if len(line) > MAX_LINE_CHARS:
            raise CatalogueError(f"{self.name}, line {self._lines}: longer than {MAX_LINE_CHARS:,} characters; "
                                 "not a label table (one row per line)")
        self._chars += len(line)
        if self._chars > MAX_TABLE_BYTES:
            raise CatalogueError(f"{self.name}: longer than {MAX_TABLE_BYTES:,} characters, the limit for a "
                                 "label table")
        return line

    def close(self) -> None:
        self._f.close()
        super().close()


def _capped(data: bytes, what: str) -> bytes:
    if len(data) > MAX_SOURCE_BYTES:
        raise CatalogueError(f"{what} is larger than {MAX_SOURCE_BYTES:,} bytes, the limit for an image")
    return data


def _read_zip_member(archive: str, member: str) -> bytes:
    try:
        handle = zip_archive(archive)
        info = handle.getinfo(member)
        check_zip_member(info, archive)
        with handle.open(info) as f:  # inflates at most the cap, whatever the header claims
            return _capped(f.read(MAX_SOURCE_BYTES + 1), f"{archive}: member {member!r}")
    except KeyError:
        raise CatalogueError(f"{archive}: no member {member!r} in the archive") from None
    except (zipfile.BadZipFile, zlib.error, OSError, NotImplementedError) as e:
        raise CatalogueError(f"{archive}: cannot read member {member!r} ({e})") from None


def _parse_idx(f: BinaryIO, path: str) -> np.ndarray:
    """The array of the IDX stream ``f``, reading no more than its header declares (plus one byte
    to notice trailing data), so a gzip bomb is never inflated past :data:`MAX_IDX_BYTES`."""
    magic = f.read(4)
    if len(magic) < 4 or magic[0] or magic[1] or magic[2] not in _IDX_DTYPES:
        raise CatalogueError(f"{path}: not an IDX file (bad magic number {magic.hex() or 'none'})")
    ndim = magic[3]
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise CatalogueError(f"{path}: IDX header is truncated")
    dims = tuple(int(d) for d in np.frombuffer(raw_dims, ">u4", count=ndim))
    dtype = np.dtype(_IDX_DTYPES[magic[2]])
    size = math.prod(dims) * dtype.itemsize
    if size > MAX_IDX_BYTES:
        raise CatalogueError(f"{path}: IDX header declares {dims} values ({size:,} bytes); the limit is "
                             f"{MAX_IDX_BYTES:,} bytes (not read)")
    data = f.read(size + 1)
    if len(data) != size:
        found = "more than that" if len(data) > size else f"{len(data)} bytes of data"
        raise CatalogueError(f"{path}: IDX file is truncated or corrupt: header says {dims} values "
                             f"({size} bytes), file has {found}")
    return np.frombuffer(data, dtype).reshape(dims)


@functools.lru_cache(maxsize=4)
def _load_idx(path: str, size: int, mtime_ns: int) -> np.ndarray:
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            if not gzipped:
                return _parse_idx(raw, path)
            with gzip.GzipFile(fileobj=raw) as f:
                return _parse_idx(f, path)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise CatalogueError(f"{path}: corrupt gzip data ({e})") from None
    except OSError as e:
        raise CatalogueError(f"{path}: cannot read ({e.strerror or e})") from None


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (gzipped or not), cached while the file is unchanged."""
    key = os.path.abspath(path)
    st = _stat(key)
    return _load_idx(key, st.st_size, st.st_mtime_ns)


def idx_png(path: str | Path, n: int) -> bytes:
    """PNG bytes of image ``n`` of an IDX image file (a 3-D uint8 array: count x rows x columns)."""
    images = read_idx(path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CatalogueError(f"{path}: not an IDX image file (array {images.shape} of {images.dtype})")
    if not 0 <= n < len(images):
        raise CatalogueError(f"{path}: no image {n} (the file holds {len(images)})")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(images[n])).save(buf, format="PNG")
    return buf.getvalue()


def read_source(uri: str) -> bytes:
    """The encoded bytes a source URI names (plain path, ``zip:...::member`` or ``idx:...::N``)."""
    if uri.startswith(ZIP_SCHEME):
        archive, sep, member = uri[len(ZIP_SCHEME):].partition(SEPARATOR)
        if not sep or not member:
            raise CatalogueError(f"bad zip source {uri!r}: expected zip:/path/archive.zip::member")
        return _read_zip_member(archive, member)
    if uri.startswith(IDX_SCHEME):
        path, sep, n = uri[len(IDX_SCHEME):].rpartition(SEPARATOR)
        if not sep or not n.isdigit():
            raise CatalogueError(f"bad IDX source {uri!r}: expected idx:/path/file-idx3-ubyte.gz::N")
        return idx_png(path, int(n))
    try:
        with open(uri, "rb") as f:
            return _capped(f.read(MAX_SOURCE_BYTES + 1), uri)
    except FileNotFoundError:
        raise CatalogueError(f"{uri}: no such file") from None
    except OSError as e:
        raise CatalogueError(f"{uri}: cannot read ({e.strerror or e})") from None


class _Container:
    """A dataset root, walked by names relative to it (``/``-separated)."""

    root: Path

    def _locate(self, name: str) -> tuple[str, str] | None:
        """(source URI, stamp) of a file, or None when it is missing."""
        raise NotImplementedError

    def item(self, item_id: str, name: str, metadata: dict[str, Any]) -> CatalogueItem | None:
        """A catalogue item for the file ``name``, or None when that file is missing."""
        found = self._locate(name)
        if found is None:
            return None
        uri, stamp = found
        # A partial (unlike a lambda) pickles, so items can cross process boundaries.
        return CatalogueItem(item_id, uri, metadata, stamp, functools.partial(read_source, uri))

    def exists(self, name: str) -> bool:
        return self._locate(name) is not None


class Folder(_Container):
    """A dataset unpacked in a folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(os.path.abspath(root))

    def find(self, filename: str, max_depth: int = 2) -> str | None:
        """The shallowest file called ``filename`` at most ``max_depth`` folders down (first by name)."""
        for depth in range(max_depth + 1):
            hits = sorted(p for p in self.root.glob("/".join(["*"] * depth + [filename])) if p.is_file())
            if hits:
                return hits[0].relative_to(self.root).as_posix()
        return None

    def open_text(self, name: str) -> TextIO:
        return open_table(self.root / name)

    def files(self) -> list[str]:
        """Every file under the root, sorted, skipping hidden files and folders."""
        names = []
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            rel = Path(folder).relative_to(self.root).as_posix()
            prefix = "" if rel == "." else rel + "/"
            names.extend(prefix + f for f in files if not f.startswith("."))
        return sorted(names)

    def _locate(self, name: str) -> tuple[str, str] | None:
        path = self.root / name
        try:
            st = path.stat()
        except OSError:
            return None
        return (str(path), _stamp(st)) if stat.S_ISREG(st.st_mode) else None


class Archive(_Container):
    """A dataset packed in a zip archive, read in place."""

    def __init__(self, path: str | Path) -> None:
        self.root = Path(os.path.abspath(path))
        infos = [i for i in zip_archive(self.root).infolist() if not i.is_dir()]
        self._infos = {i.filename: i for i in infos if _safe_member_name(i.filename)}
        unsafe = [i.filename for i in infos if i.filename not in self._infos]
        if unsafe:
            log.warning("%s: %d member(s) with an absolute path or a '..' component are skipped (first: %s)",
                        self.root, len(unsafe), ", ".join(map(repr, unsafe[:5])))

    def find(self, filename: str, max_depth: int = 2) -> str | None:
        hits = [n for n in self._infos if n.rpartition("/")[2] == filename
                and n.count("/") <= max_depth and not n.startswith("__MACOSX/")]
        return min(hits, key=lambda n: (n.count("/"), n), default=None)

    def open_text(self, name: str) -> TextIO:
        handle = zip_archive(self.root)
        info = handle.getinfo(name)
        check_zip_member(info, self.root, table=True)
        return BoundedText(io.TextIOWrapper(handle.open(info), encoding="utf-8-sig", errors="replace", newline=""),
                           f"{self.root}: member {name!r}")

    def files(self) -> list[str]:
        return sorted(n for n in self._infos if not n.startswith("__MACOSX/"))

    def _locate(self, name: str) -> tuple[str, str] | None:
        info = self._infos.get(name)
        return None if info is None else (zip_uri(self.root, name), f"{info.CRC:08x}:{info.file_size}")


def open_table(path: str | Path) -> TextIO:
    """A label table file opened as :class:`BoundedText` (CSV-ready: UTF-8 with or without BOM)."""
    try:
        f = open(path, encoding="utf-8-sig", errors="replace", newline="")  # noqa: SIM115 - BoundedText closes it
    except OSError as e:
        raise CatalogueError(f"{path}: cannot read the metadata table ({e.strerror or e})") from None
    return BoundedText(f, str(path))


def _safe_member_name(name: str) -> bool:
    """Whether a zip member name stays inside the archive: relative, without '..' components
    (in either slash direction), so no item id or path made from it can point outside."""
    parts = name.replace("\\", "/").split("/")
    return not name.startswith(("/", "\\")) and ".." not in parts


Container = Folder | Archive


def open_container(path: str | Path) -> Container:
    """A folder or zip archive as a :class:`Folder` or :class:`Archive`."""
    p = Path(path)
    if p.is_dir():
        return Folder(p)
    if p.is_file():
        if zipfile.is_zipfile(p):
            return Archive(p)
        raise CatalogueError(f"{p}: not a folder or a zip archive")
    raise CatalogueError(f"{p}: no such file or folder")


def iter_items(container: Container, entries: Iterable[tuple[str, str, dict[str, Any]]],
               what: str) -> Iterator[CatalogueItem]:
    """Items for ``(id, file name, metadata)`` entries, in order. Entries whose file is missing or
    whose id was already used are skipped, and logged once at the end as problems of ``what``."""
    seen: set[str] = set()
    missing: list[str] = []
    repeated: list[str] = []
    for item_id, name, metadata in entries:
        if item_id in seen:
            repeated.append(item_id)
            continue
        item = container.item(item_id, name, metadata)
        if item is None:
            missing.append(name)
            continue
        seen.add(item_id)
        yield item
    if missing:
        log.warning("%s: %d entries of %s have no image and are skipped (first: %s)",
                    container.root, len(missing), what, ", ".join(missing[:5]))
    if repeated:
        log.warning("%s: %d entries of %s repeat an id and are skipped (first: %s)",
                    container.root, len(repeated), what, ", ".join(repeated[:5]))
