"""What the HTTP routes call: the collection, the encoder and a bounded inference pool, loaded once.

Every method here is synchronous and may take milliseconds to tens of milliseconds (decoding,
embedding, scoring, SQLite); routes run them in :attr:`Service.pool` via :meth:`Service.run` so
the event loop stays free. Reads of the collection take its lock, so they never interleave with a
write's open transaction; embedding happens outside the lock, so adds and searches overlap.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import logging
import math
import os
import re
import stat
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePath
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from vestis.api.attributes import parse_attrs
from vestis.api.models import TextOptions
from vestis.api.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    PayloadTooLargeError,
)
from vestis.data.images import decode_image
from vestis.data.sources import IDX_SCHEME, SEPARATOR, ZIP_SCHEME, file_stamp, read_source
from vestis.encoders.base import ImageEncoder
from vestis.encoders.colour import colour_descriptor
from vestis.encoders.onnx_encoder import OnnxEncoder
from vestis.encoders.text import TextEncoder, get_text_encoder
from vestis.errors import CatalogueError, NotFoundError, VestisError
from vestis.search.attributes import AttributeQuery, AttributeSearcher
from vestis.search.searcher import Query, Searcher, SearchResponse
from vestis.search.text import DEFAULT_TEXT_WEIGHT, TextSearcher
from vestis.store.atomic import atomic_write_bytes
from vestis.store.collection import Collection, Item, NewItem
from vestis.store.ingest import open_collection_encoder

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
UPLOADS_DIR = "uploads"
ITEM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_ITEM_ID_RE = re.compile(ITEM_ID_PATTERN)
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
COLUMN_VALUES = 200  # most frequent values listed per metadata column (a column with more is id-like)
MAX_METADATA_KEYS = 64
MAX_METADATA_VALUE = 1000
THUMBNAIL_QUALITY = 85


def default_workers() -> int:
    """Inference threads: one per core, at most 4 (more only queue behind the same cores)."""
    return max(1, min(4, os.cpu_count() or 1))


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
    """The collection, its encoder and the inference pool of one server process."""

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
    ) -> None:
        started = time.perf_counter()
        self.workers = workers or default_workers()
        if self.workers < 1:
            raise VestisError(f"workers must be at least 1 (got {workers})")
        self.api_key = api_key or None
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.collection = Collection.open(collection_dir)
        if encoder is None:
            # Split the cores between the workers so concurrent queries do not oversubscribe them.
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            encoder = open_collection_encoder(self.collection, threads=threads)
        self.searcher = Searcher(self.collection, encoder)
        self.encoder = encoder
        self.attributes = self._open_attributes(encoder)
        self.text = self._open_text(threads=max(1, (os.cpu_count() or 1) // self.workers))
        self._text_encoder: TextEncoder | None = None
        self.collection.table()
        self._saved_generation = self.collection.generation
        if self.collection.uses_ann:
            self.collection.index()
        self.encoder.embed_images([Image.new("RGB", (64, 64), "white")])  # warm up the inference session
        self.uploads = self.collection.path / UPLOADS_DIR
        if allow_roots:
            self.roots = [Path(os.path.realpath(r)) for r in allow_roots]
        else:
            self.roots = default_roots(self.collection)
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="vestis-api")
        self._columns: tuple[int, dict[str, list[tuple[str, int]]]] | None = None
        self.started_at = time.time()
        self.startup_seconds = time.perf_counter() - started

    # ----------------------------------------------------------------- plumbing
    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking work in the bounded inference pool."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    def save(self) -> None:
        """Save the derived caches (vectors, index) if items changed since the last save, so the next
        start is fast. The service stays usable: an ASGI lifespan may end and start again."""
        with self.collection.lock:
            generation = self.collection.generation
            if generation != self._saved_generation:
                self.collection.persist()
                if self.attributes is not None:
                    self.attributes.index.save()
                if self.text is not None and self.text.index is not None:
                    self.text.index.save()
                self._saved_generation = generation

    def item_count(self) -> int:
        with self.collection.lock:
            return len(self.collection)

    def _open_attributes(self, encoder: ImageEncoder) -> AttributeSearcher | None:
        """The attribute search of the collection (sharing the encoder when it is the attribute
        model's backbone); None when the collection has no attribute index or its model is unusable."""
        from vestis.store.attribute_index import AttributeIndex

        index = AttributeIndex.open(self.collection)
        if index is None:
            return None
        index.close()
        backbone = encoder if isinstance(encoder, OnnxEncoder) else None
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        try:
            searcher = AttributeSearcher.open(self.collection, backbone=backbone, threads=threads)
        except VestisError as e:
            log.warning("attribute search is off: %s", e)
            return None
        searcher.index.table()
        return searcher

    def _open_text(self, threads: int) -> TextSearcher | None:
        """Text search (keyword always; vector and hybrid when the collection has a joint model);
        None when the joint model is unusable, with the reason logged."""
        try:
            searcher = TextSearcher.open(self.collection, threads=threads)
        except VestisError as e:
            log.warning("text search is off: %s", e)
            return None
        if searcher.index is not None:
            searcher.index.table()
        return searcher

    def text_search(self, options: TextOptions, *, image: bytes | None, item_id: str | None, k: int, offset: int,
                    filters: dict[str, list[str]], timings: dict[str, float]) -> tuple[SearchResponse, str]:
        """Words, an image or item and weighted examples composed in the joint space; returns the
        response and the mode used."""
        if self.text is None:
            raise InvalidRequestError("text search is not available for this collection (see the server log)")
        images = []
        if image is not None:
            self.check_size(len(image), "the image")
            t0 = time.perf_counter()
            picture = decode_image(image, max_pixels=self.max_pixels, source="upload")
            t1 = time.perf_counter()
            images.append((1.0, self.encoder.embed_images([picture])[0]))
            timings.update(decode=(t1 - t0) * 1000, embed=(time.perf_counter() - t1) * 1000)
        items = ([item_id] if item_id is not None else []) + list(options.positive)
        mode = options.mode or (self.text.default_mode if options.text is not None else "vector")
        with self.collection.lock:
            query = self.text.query(options.text, images=images, items=items, negative_items=options.negative,
                                    mode=mode, text_weight=DEFAULT_TEXT_WEIGHT if options.text_weight is None
                                    else options.text_weight)
            return self.text.search(query, k=k, offset=offset, filters=filters or None, timings=timings), mode

    def attribute_names(self) -> list[str]:
        """Attributes the collection can be searched by (those of its attribute index, if any)."""
        return self.attributes.attributes if self.attributes is not None else []

    def parse_attrs(self, raw: str | Sequence[str] | None) -> dict[str, float]:
        """Attribute weights from the ``attrs`` field; 422 listing the valid attributes when unknown."""
        return parse_attrs(raw, self.attribute_names(), text_encoder=self._attribute_text_encoder)

    def _attribute_text_encoder(self) -> TextEncoder:
        """The text encoder that reads attribute names by meaning (the joint model's, else the default)."""
        if self.text is not None and self.text.model is not None:
            return self.text.model.text_encoder
        if self._text_encoder is None:
            self._text_encoder = get_text_encoder(threads=1)
        return self._text_encoder

    def metadata_columns(self) -> dict[str, list[tuple[str, int]]]:
        """Metadata keys with their most frequent values, recomputed only after a write."""
        with self.collection.lock:
            gen = self.collection.generation
            if self._columns is None or self._columns[0] != gen:
                self._columns = (gen, self.collection.metadata_columns(max_values=COLUMN_VALUES))
            return self._columns[1]

    def check_filters(self, filters: dict[str, list[str] | str]) -> dict[str, list[str]]:
        """Filters as lists of values; an unknown column is refused (422) with the valid ones."""
        columns = self.metadata_columns() if filters else {}
        unknown = [key for key in filters if key not in columns]
        if unknown:
            raise InvalidRequestError(f"unknown filter column(s) {', '.join(map(repr, unknown))}; "
                                      f"valid columns: {sorted(columns)}")
        return {key: [values] if isinstance(values, str) else list(values) for key, values in filters.items()}

    def check_size(self, size: int, what: str) -> None:
        if size > self.max_upload_bytes:
            raise PayloadTooLargeError(f"{what} is {size:,} bytes; the limit is {self.max_upload_bytes:,} bytes")

    # ----------------------------------------------------------------- queries
    def query_from_bytes(self, data: bytes, timings: dict[str, float], source: str = "upload") -> Query:
        """Decode (with the pixel limit) and embed an uploaded image."""
        self.check_size(len(data), "the image")
        t0 = time.perf_counter()
        image = decode_image(data, max_pixels=self.max_pixels, source=source)
        decode_ms = (time.perf_counter() - t0) * 1000
        if self.attributes is not None:  # the attribute vectors come from the same backbone pass
            query = self.attributes.query_from_image(image, timings, global_encoder=self.encoder)
        else:
            query = self.searcher.query_from_image(image, timings)
        timings["decode"] = decode_ms
        return query

    def query_from_item(self, item_id: str) -> Query:
        with self.collection.lock:
            if self.attributes is not None:
                return self.attributes.query_from_item(item_id)
            return self.searcher.query_from_item(item_id)

    def search(self, query: Query, *, k: int, offset: int, filters: dict[str, list[str]],
               colour_weight: float, timings: dict[str, float],
               attrs: dict[str, float] | None = None) -> SearchResponse:
        """The global search, or with ``attrs`` (attribute weights) the attribute search."""
        with self.collection.lock:
            if attrs:
                if self.attributes is None or not isinstance(query, AttributeQuery):
                    raise InvalidRequestError("attribute search is not available for this collection")
                query.weights = attrs
                try:
                    return self.attributes.search(query, k=k, offset=offset, filters=filters or None,
                                                  colour_weight=colour_weight, timings=timings)
                except VestisError as e:
                    raise InvalidRequestError(str(e)) from None
            return self.searcher.search(query, k=k, offset=offset, filters=filters or None,
                                        colour_weight=colour_weight, timings=timings)

    def query_from_img_path(self, img_path: str, timings: dict[str, float]) -> Query:
        """RPF's ``img_path``: an item id of the collection first, else an image file under a root."""
        try:
            return self.query_from_item(img_path)
        except NotFoundError:
            pass
        path = self.resolve_image_path(img_path)
        return self.query_from_bytes(self.read_image_file(path), timings, source=img_path)

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
        with self.collection.lock:
            return self.collection.get(item_id)

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
        """Embed an uploaded image and add it; its bytes are kept in ``<collection>/uploads/``."""
        self.check_size(len(data), "the image")
        metadata = _check_metadata(metadata)
        if item_id is None:
            item_id = uuid.uuid4().hex[:16]
        elif not _ITEM_ID_RE.match(item_id):
            raise InvalidRequestError("item id must be 1 to 128 letters, digits, '.', '_' or '-', "
                                      "starting with a letter or digit")
        image = decode_image(data, max_pixels=self.max_pixels, source="upload")
        attribute_vectors = None
        if self.attributes is not None:  # the attribute vectors come from the same backbone pass
            vector, attribute_vectors = self.attributes.embed(image, self.encoder)
        else:
            vector = self.encoder.embed_images([image])[0]
        colour = colour_descriptor(image) if self.collection.colour_dim else None
        path = self.uploads / f"{item_id}{_extension(image_mime(data))}"
        with self.collection.lock:
            if item_id in self.collection:
                raise ConflictError(f"item {item_id!r} already exists; delete it first to replace it")
            self.uploads.mkdir(exist_ok=True)
            atomic_write_bytes(path, data)
            try:
                self.collection.upsert([NewItem(
                    id=item_id, source=str(path), hash=hashlib.sha256(data).hexdigest(), vector=vector,
                    colour=colour, metadata=metadata, stamp=file_stamp(path), catalogue=str(self.uploads),
                )])
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            item = self.collection.get(item_id)
            if attribute_vectors is not None:
                self.attributes.index.add(np.array([item.vid]), attribute_vectors[None])
            if self.text is not None and self.text.model is not None:  # searchable in words at once
                self.text.index.add(np.array([item.vid]), self.text.model.embed_image_features(vector[None])[:, None])
            return item

    def remove_item(self, item_id: str) -> None:
        """Remove an item (404 when unknown), and its uploaded image if the API stored it."""
        with self.collection.lock:
            source = Path(self.collection.get(item_id).source)
            self.collection.remove([item_id])
            if source.parent == self.uploads:
                source.unlink(missing_ok=True)
