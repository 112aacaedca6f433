"""What the HTTP routes call: the collection, the encoder and a bounded inference pool, loaded once.

Every method here is synchronous and may take milliseconds to tens of milliseconds (decoding,
embedding, scoring, SQLite); routes run them in :attr:`Service.pool` via :meth:`Service.run` so
the event loop stays free. Reads of the collection take its lock, so they never interleave with a
write's open transaction; embedding happens outside the lock, so adds and searches overlap.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import math
import os
import re
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePath
from typing import Any, TypeVar

from PIL import Image

from vestis.api.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    PayloadTooLargeError,
)
from vestis.data.base import CatalogueItem
from vestis.data.images import decode_image
from vestis.data.sources import IDX_SCHEME, SEPARATOR, ZIP_SCHEME, file_stamp, read_source
from vestis.encoders.base import ImageEncoder
from vestis.encoders.batching import BatchingEncoder, BatchStats
from vestis.errors import CatalogueError, NotFoundError, VestisError
from vestis.locks import leaf_lock
from vestis.search.duplicates import DuplicateReport, check_threshold, find_duplicates
from vestis.search.engine import Engine, SearchOutcome, default_threads
from vestis.search.query import SearchQuery
from vestis.store.atomic import fsync_dir
from vestis.store.collection import Collection, Item
from vestis.store.guards import disk_full_errors

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# An upload is decoded whole (3 bytes a pixel, more while converting) by each of the workers at
# once: 16 MP (a 12 MP phone photo fits) keeps that near 50 MB a request (the CLI allows 40 MP).
DEFAULT_MAX_PIXELS = 16_000_000
UPLOADS_DIR = "uploads"
ITEM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_ITEM_ID_RE = re.compile(ITEM_ID_PATTERN)
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
MAX_METADATA_KEYS = 64
MAX_METADATA_VALUE = 1000
THUMBNAIL_QUALITY = 85
SAVE_WAIT_S = 5.0  # how long saving at shutdown waits for a request that holds the collection


def default_workers() -> int:
    """Inference threads: one per core and one more, at most 5. The one more keeps the cores busy
    while a worker waits for the collection's lock or the GIL (measured on 2 cores: the same CPU
    per upload as one per core, benchmarks/results/api.md); beyond that they only queue."""
    return min(5, (os.cpu_count() or 1) + 1)


def _container_folder(source: str) -> str:
    """The folder holding a source's file: the archive's folder for zip members and IDX images."""
    if source.startswith(ZIP_SCHEME):  # the archive path cannot hold the separator; a member may
        return os.path.dirname(source[len(ZIP_SCHEME):].partition(SEPARATOR)[0])
    if source.startswith(IDX_SCHEME):
        return os.path.dirname(source[len(IDX_SCHEME):].rpartition(SEPARATOR)[0])
    return os.path.dirname(source)


def default_roots(collection: Collection) -> list[Path]:
    """Folders ``img_path`` may read by default: for each catalogue in the collection, its folder
    when it holds the items' files, else the common parent of those files (for zip and IDX
    sources, the archive's folder). A root of ``/`` would allow the whole filesystem and is dropped."""
    folders: dict[str, set[str]] = {}
    for _stamp, _hash, source, catalogue in collection.stamps().values():
        folders.setdefault(catalogue, set()).add(_container_folder(source))
    roots = set()
    for catalogue, group in folders.items():
        common = os.path.realpath(os.path.commonpath(sorted(group)))
        if catalogue and os.path.isdir(catalogue) and Path(common).is_relative_to(os.path.realpath(catalogue)):
            common = os.path.realpath(catalogue)
        if common == os.path.sep:
            log.warning("catalogue files span the whole filesystem; pass --allow-root to allow img_path")
            continue
        roots.add(Path(common))
    return sorted(roots)


def image_mime(data: bytes) -> str:
    """The MIME type of encoded image bytes, from their header (octet-stream when unknown)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return Image.MIME.get(im.format or "", "application/octet-stream")
    except Exception:  # noqa: BLE001 - any unreadable header: serve the bytes as opaque data
        return "application/octet-stream"


def _extension(mime: str) -> str:
    return {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif",
            "image/bmp": ".bmp", "image/tiff": ".tif"}.get(mime, ".img")


def _write_new_file(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` whole and durably, unless ``path`` exists: False then, and
    nothing is changed. The bytes go to a temporary file that is then hard-linked to ``path``,
    which fails when another request got there first, so concurrent writers never share a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        fsync_dir(path.parent)
        return True
    finally:
        os.unlink(tmp)


def _check_metadata(metadata: Any) -> dict[str, Any]:
    if not isinstance(metadata, dict):
        raise InvalidRequestError("metadata must be a JSON object of labels, e.g. {\"baseColour\": \"Blue\"}")
    if len(metadata) > MAX_METADATA_KEYS:
        raise InvalidRequestError(f"metadata has {len(metadata)} keys; at most {MAX_METADATA_KEYS} are allowed")
    for key, value in metadata.items():
        if not key or len(key) > 100:
            raise InvalidRequestError("metadata keys must be 1 to 100 characters long")
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise InvalidRequestError(f"metadata value of {key!r} must be a string, number, boolean or null")
        if isinstance(value, float) and not math.isfinite(value):  # NaN is not JSON: SQLite would refuse it
            raise InvalidRequestError(f"metadata value of {key!r} must be a finite number")
        if isinstance(value, str) and len(value) > MAX_METADATA_VALUE:
            raise InvalidRequestError(f"metadata value of {key!r} is longer than {MAX_METADATA_VALUE} characters")
    return metadata


class Service:
    """The engine of one server process (collection, encoder, attribute model), the HTTP limits and
    the inference pool."""

    def __init__(
        self,
        collection_dir: Path | str,
        *,
        allow_roots: Sequence[Path | str] | None = None,
        api_key: str | None = None,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        workers: int | None = None,
        encoder: ImageEncoder | None = None,
        batch: int = 1,
    ) -> None:
        started = time.perf_counter()
        # Batched, request threads mostly wait for the batcher: more of them lets batches fill.
        self.workers = workers or (default_workers() if batch <= 1 else 2 * batch)
        if self.workers < 1:
            raise VestisError(f"workers must be at least 1 (got {workers})")
        self.api_key = api_key or None
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        # Unbatched, the workers split the cores. Batched, one encoder run at a time gets every core
        # but one, which the request threads need meanwhile (decode, preprocess, search, HTTP): with
        # every core the encoder's threads and theirs oversubscribe the cores (measured on 2 cores:
        # 0.7 ms more CPU per upload, benchmarks/results/api.md).
        threads = default_threads(self.workers) if batch <= 1 else max(1, (os.cpu_count() or 1) - 1)
        self.engine = Engine.open(collection_dir, encoder=encoder, threads=threads, batch=batch)
        self.collection = self.engine.collection
        self.engine.load()
        if self.engine.attributes is not None:
            self.engine.attributes.index.table()
        self._saved_generation = self.collection.generation
        self.uploads = self.collection.path / UPLOADS_DIR
        if allow_roots:
            self.roots = [Path(os.path.realpath(r)) for r in allow_roots]
        else:
            self.roots = default_roots(self.collection)
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="vestis-api")
        self._busy, self._busy_lock = 0, leaf_lock("requests running")
        self._duplicates: dict[tuple[int, float], DuplicateReport] = {}  # the last scan, by generation
        self.started_at = time.time()
        self.startup_seconds = time.perf_counter() - started

    # ----------------------------------------------------------------- plumbing
    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking work in the bounded inference pool."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(self._counted, fn, *args,
                                                                                             **kwargs))

    def _counted(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._busy_lock:
            self._busy += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with self._busy_lock:
                self._busy -= 1

    def busy(self) -> int:
        """How many requests' work is running in the pool now."""
        with self._busy_lock:
            return self._busy

    def duplicates(self, threshold: float) -> DuplicateReport:
        """The collection's near-duplicate groups at ``threshold``, scanned once per generation (a 44k
        catalogue takes about a minute) and kept until the next write."""
        threshold = check_threshold(threshold)
        generation = self.collection.generation
        with self._busy_lock:
            cached = self._duplicates.get((generation, threshold))
        if cached is None:
            cached = find_duplicates(self.collection, threshold)
            with self._busy_lock:
                self._duplicates = {(generation, threshold): cached}
        return cached

    def shutdown(self) -> None:
        """At the end of serving: say which requests are not waited for, and save."""
        running = self.busy()
        if running:
            log.warning("stopping with %d request(s) still running: not waiting for them "
                        "(every committed write is kept)", running)
        self.save()

    def save(self, wait_s: float = SAVE_WAIT_S) -> None:
        """Save the derived files if items changed since the last save, so the next start is fast.
        The service stays usable: an ASGI lifespan may end and start again. A request that holds
        the collection for longer than ``wait_s`` (stuck) is not waited for: the files are derived,
        and the next start catches up from the database."""
        if not self.collection.lock.acquire(timeout=wait_s):
            log.warning("derived files not saved: a request still holds the collection after %.0f s", wait_s)
            return
        try:
            generation = self.collection.generation
            if generation != self._saved_generation:
                self.engine.persist()
                self._saved_generation = generation
        finally:
            self.collection.lock.release()

    def item_count(self) -> int:
        return len(self.collection)

    def batch_stats(self) -> BatchStats | None:
        """What the encoder's batcher ran so far (``batch`` > 1), else None."""
        encoder = self.engine.encoder
        return encoder.batcher.stats if isinstance(encoder, BatchingEncoder) else None

    def attribute_names(self) -> list[str]:
        """Attributes the collection can be searched by (those of its attribute index, if any)."""
        return self.engine.attribute_names()

    def metadata_columns(self) -> dict[str, list[tuple[str, int]]]:
        return self.engine.metadata_columns()

    def check_size(self, size: int, what: str) -> None:
        if size > self.max_upload_bytes:
            raise PayloadTooLargeError(f"{what} is {size:,} bytes; the limit is {self.max_upload_bytes:,} bytes")

    # ----------------------------------------------------------------- queries
    def search(self, query: SearchQuery, timings: dict[str, float]) -> SearchOutcome:
        """Answer a query with the engine, within this server's upload limits (bytes and pixels)."""
        for data in [query.image] if query.image is not None else []:
            self.check_size(len(data), "the image")
        return self.engine.run(query, timings=timings, max_pixels=self.max_pixels)

    def img_path_query(self, img_path: str, *, attrs: str | list[str] | None, k: int) -> SearchQuery:
        """RPF's ``img_path``: an item id of the collection first, else an image file under a root."""
        if img_path in self.collection:
            return SearchQuery(item_id=img_path, attrs=attrs, k=k)
        path = self.resolve_image_path(img_path)
        return SearchQuery(image=self.read_image_file(path), image_name=img_path, attrs=attrs, k=k)

    def resolve_image_path(self, raw: str) -> Path:
        """The real path of an ``img_path`` that lies under an allowed root.

        URLs are refused (400: nothing is fetched); ``..`` components, and paths whose real
        location (symlinks resolved) is outside every root, are refused (403). A relative path is
        looked up under each root in turn."""
        if _URL_RE.match(raw):
            raise BadRequestError("img_path is a URL; this server does not fetch URLs. "
                                  "Upload the image to POST /search instead")
        if "\x00" in raw:
            raise BadRequestError("img_path contains a NUL character")
        if ".." in PurePath(raw).parts:
            raise ForbiddenError("img_path may not contain '..'")
        if not self.roots:
            raise ForbiddenError("no image folder is allowed on this server (start it with --allow-root)")
        candidates = [Path(raw)] if os.path.isabs(raw) else [root / raw for root in self.roots]
        for candidate in candidates:
            real = Path(os.path.realpath(candidate))
            if not any(real.is_relative_to(root) for root in self.roots):
                if os.path.isabs(raw) or os.path.lexists(candidate):
                    raise ForbiddenError("img_path is outside the folders this server may read")
                continue
            try:
                if stat.S_ISREG(real.stat().st_mode):
                    return real
            except OSError:
                continue
        raise NotFoundError(f"img_path {raw!r} is neither an item id nor an image file under the allowed folders")

    def read_image_file(self, path: Path) -> bytes:
        with open(path, "rb") as f:
            self.check_size(os.fstat(f.fileno()).st_size, "the image file")
            return f.read(self.max_upload_bytes + 1)

    # ----------------------------------------------------------------- items
    def get_item(self, item_id: str) -> Item:
        return self.collection.get(item_id)

    def has_item(self, item_id: str) -> bool:
        with self.collection.lock:
            return item_id in self.collection

    def list_items(self, offset: int, limit: int) -> tuple[int, list[Item]]:
        """The collection's size and a page of its items, in the order they were added."""
        with self.collection.lock:
            return len(self.collection), self.collection.page(offset, limit)

    def item_image(self, item: Item, size: int | None) -> tuple[bytes, str]:
        """The item's image bytes and MIME type; with ``size``, a JPEG thumbnail fitting size x size."""
        try:
            data = read_source(item.source)
        except CatalogueError as e:
            raise CatalogueError(f"the image of item {item.id!r} is not available: {e}") from None
        if size is None:
            return data, image_mime(data)
        image = decode_image(data, max_pixels=self.max_pixels, source=item.id)
        image.thumbnail((size, size), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=THUMBNAIL_QUALITY)
        return buf.getvalue(), "image/jpeg"

    def add_item(self, data: bytes, item_id: str | None, metadata: Any) -> Item:
        """Add an uploaded image as an item, embedded as ``vestis index`` embeds; its bytes are kept
        in ``<collection>/uploads/``."""
        self.check_size(len(data), "the image")
        metadata = _check_metadata(metadata)
        if item_id is None:
            item_id = uuid.uuid4().hex[:16]
        elif not _ITEM_ID_RE.match(item_id):
            raise InvalidRequestError("item id must be 1 to 128 letters, digits, '.', '_' or '-', "
                                      "starting with a letter or digit")
        decode_image(data, max_pixels=self.max_pixels, source="upload")  # the server's pixel limit
        if item_id in self.collection:
            raise ConflictError(f"item {item_id!r} already exists; delete it first to replace it")
        self.uploads.mkdir(exist_ok=True)
        path = self.uploads / f"{item_id}{_extension(image_mime(data))}"
        with disk_full_errors(self.collection.path):
            if not _write_new_file(path, data):
                raise ConflictError(f"item {item_id!r} is being added by another request")
            try:  # the file is this request's own: no other request can have written it
                item = CatalogueItem(id=item_id, source=str(path), metadata=metadata, stamp=file_stamp(path),
                                     read=lambda: data)
                return self.engine.add([item], catalogue=str(self.uploads))[0]
            except BaseException:
                path.unlink(missing_ok=True)
                raise

    def remove_item(self, item_id: str) -> None:
        """Remove an item (404 when unknown), and its uploaded image if the API stored it."""
        with self.collection.lock, disk_full_errors(self.collection.path):
            source = Path(self.collection.get(item_id).source)
            self.engine.remove([item_id])
            if source.parent == self.uploads:
                source.unlink(missing_ok=True)
