"""The engine: one collection with its encoder and attribute model, opened once; everything the CLI,
the HTTP API and the benchmarks read and write goes through it.

Reading: :meth:`Engine.query` turns an image (file, bytes or PIL), or an indexed item, into a
:class:`~vestis.search.results.Query`; :meth:`Engine.search` answers it with the global searcher,
or with the attribute searcher when attributes are named, after checking filters and limits.
Writing: :meth:`Engine.index` brings the collection in line with a catalogue, :meth:`Engine.add`
adds items through the same item builder (so an item added by the API is embedded exactly as
``vestis index`` embeds it), :meth:`Engine.remove` removes items; every write keeps the attribute
vectors in step when the collection has an attribute model, and the joint text-image vectors when
it has a joint model. A text query (:meth:`Engine.text_query`: words, images and example items
with weights and negatives, :mod:`vestis.search.text`) is one more kind of query that
:meth:`Engine.search` answers.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from vestis.data.base import Catalogue, CatalogueItem
from vestis.data.images import MAX_PIXELS, decode_image
from vestis.encoders.base import ImageEncoder
from vestis.encoders.batching import BatchingEncoder
from vestis.encoders.onnx_encoder import OnnxEncoder
from vestis.encoders.regions import REGION_NAMES, RegionFinder, get_region_finder
from vestis.encoders.text import TextEncoder, get_text_encoder
from vestis.errors import DuplicateItemError, ImageError, VestisError
from vestis.search.duplicates import DuplicateFilter
from vestis.search.filters import check_filters
from vestis.search.attributes import AttributeQuery, AttributeSearcher, parse_attributes_by_meaning
from vestis.search.opening import open_collection, open_collection_encoder
from vestis.search.query import SearchQuery
from vestis.search.parts import PartSplits
from vestis.search.regions import NoRegionError, RegionHits, missing_region_message, region_scope
from vestis.search.results import Query, SearchResponse
from vestis.search.searcher import Searcher
from vestis.search.text import TextQuery, TextSearcher
from vestis.store.factory import open_attributes
from vestis.store.vector_builds import BuildReport, build_attribute_index, update_attributes
from vestis.store.collection import Collection, Item, NewItem
from vestis.store.ingest import Embedder, IngestReport, RegionCrop, build_items, index_catalogue, local_embedder

from vestis.store.vector_builds import update_joint

log = logging.getLogger(__name__)

COLUMN_VALUES = 200  # most frequent values listed per metadata column (a column with more is id-like)
QueryImage = Image.Image | bytes | Path


@dataclass
class SearchOutcome:
    """The answer to a :class:`SearchQuery`: the results (of the whole photo, or of the one region
    asked for), the results per garment region when regions were asked for, the label values read
    in its words (a text query), and what kind of query it was."""

    response: SearchResponse
    regions: list[RegionHits] | None
    understood: Any
    info: dict[str, str]


class Engine:
    """A collection opened for reading and writing (see the module docstring). Thread-safe as the
    collection is; the encoder and the attribute model are loaded on first use. With ``batch`` > 1,
    one-image embeds from concurrent threads (a server's requests) that are waiting together share
    one encoder run (``vestis.encoders.batching``)."""

    def __init__(self, collection: Collection, *, encoder: ImageEncoder | None = None,
                 threads: int | None = None, batch: int = 1) -> None:
        if encoder is not None:
            collection.check_encoder(encoder.version)
        self.collection = collection
        self.threads = threads
        self.batch = batch
        self._encoder = self._batching(encoder) if encoder is not None else None
        self._attributes: AttributeSearcher | None = None
        self._attributes_checked = False
        self._text: TextSearcher | None = None
        self._regions: RegionFinder | None = None
        self.part_splits = PartSplits()
        self._columns: tuple[int, dict[str, list[tuple[str, int]]]] | None = None

    @classmethod
    def open(cls, location: Path | str, *, encoder: ImageEncoder | None = None,
             threads: int | None = None, batch: int = 1) -> Engine:
        return cls(open_collection(location), encoder=encoder, threads=threads, batch=batch)

    def _batching(self, encoder: ImageEncoder) -> ImageEncoder:
        if self.batch <= 1:
            return encoder
        return BatchingEncoder(encoder, max_batch=self.batch)

    def close(self) -> None:
        self.collection.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- what is loaded once
    @property
    def encoder(self) -> ImageEncoder:
        """The collection's encoder; opened again once another process re-embedded the collection
        (``vestis reindex``), so a running server embeds queries as the stored vectors were."""
        self.collection.refresh()
        if self._encoder is None or self._encoder.version != self.collection.encoder_version:
            self._encoder = self._batching(open_collection_encoder(self.collection, threads=self.threads))
        return self._encoder

    @property
    def attributes(self) -> AttributeSearcher | None:
        """The attribute searcher (sharing the encoder when it is the attribute model's backbone);
        None when the collection has no attribute index or its model is unusable (with a warning)."""
        if not self._attributes_checked:
            self._attributes_checked = True
            if open_attributes(self.collection) is not None:
                backbone = self._encoder if isinstance(self._encoder, OnnxEncoder) else None
                try:
                    self._attributes = AttributeSearcher.open(self.collection, backbone=backbone,
                                                              threads=self.threads)
                except VestisError as error:
                    log.warning("attribute search is off: %s", error)
        return self._attributes

    @property
    def regions(self) -> RegionFinder:
        """The garment region finder (loaded on first use)."""
        if self._regions is None:
            self._regions = get_region_finder(threads=self.threads)
        return self._regions

    @property
    def text(self) -> TextSearcher:
        """The text searcher (keyword search always; vector and hybrid with a joint model)."""
        if self._text is None:
            self._text = TextSearcher.open(self.collection, threads=self.threads)
        return self._text

    def text_query(self, text: str | None = None, *, images: Sequence[tuple[float, QueryImage]] = (),
                   negative_images: Sequence[tuple[float, QueryImage]] = (), items: Sequence[str] = (),
                   negatives: Sequence[str] = (), mode: str | None = None, text_weight: float | None = None,
                   timings: dict[str, float] | None = None) -> TextQuery:
        """A query of words and/or weighted examples: query images (embedded by the collection's
        encoder), item ids (``WEIGHT:ID``) and negatives of both kinds (default mode: see
        :meth:`TextSearcher.query`)."""
        timings = {} if timings is None else timings
        t0 = time.perf_counter()
        positive_vectors = [(w, self.encoder.embed_images([_as_image(im)])[0]) for w, im in images]
        negative_vectors = [(w, self.encoder.embed_images([_as_image(im)])[0]) for w, im in negative_images]
        if images or negative_images:
            timings["embed"] = (time.perf_counter() - t0) * 1000
        query = self.text.query(text, images=positive_vectors, negative_images=negative_vectors, items=items,
                                negative_items=negatives, mode=mode,
                                text_weight=text_weight)
        timings.update(query.timings)
        return query

    def load(self, *, model: bool = True) -> dict[str, float]:
        """Load the vectors and index (and with ``model`` the encoder) now rather than on the first
        query; returns how long each took, in ms (``load_collection``, ``load_model``)."""
        t0 = time.perf_counter()
        self.collection.warm()
        t1 = time.perf_counter()
        if model:
            self.encoder.embed_images([Image.new("RGB", (64, 64), "white")])  # warm up the session
        return {"load_collection": (t1 - t0) * 1000, "load_model": (time.perf_counter() - t1) * 1000}

    # ----------------------------------------------------------------- checking requests
    def attribute_names(self) -> list[str]:
        """Attributes the collection can be searched by (those of its attribute index, if any)."""
        return self.attributes.attributes if self.attributes is not None else []

    def parse_attrs(self, raw: str | Sequence[str] | None) -> dict[str, float]:
        """Attribute weights from free text; a name that matches no attribute is read as the nearest
        one in meaning (logged: which attribute was used), else it is an error listing the valid ones."""
        if not raw:
            return {}
        weights, resolved = parse_attributes_by_meaning(raw, self.attribute_names(), self.attribute_text_encoder)
        for part, (name, similarity) in resolved.items():
            log.warning("attribute %r read as %s (similarity %.2f)", part, name, similarity)
        return weights

    def attribute_text_encoder(self) -> TextEncoder:
        """The text encoder that reads attribute names by meaning (the joint model's when there is one)."""
        if self.text.model is not None:
            return self.text.model.text_encoder
        return get_text_encoder(threads=self.threads)

    def metadata_columns(self) -> dict[str, list[tuple[str, int]]]:
        """Metadata keys with their most frequent values, recomputed only after a write."""
        with self.collection.lock:
            gen = self.collection.generation
            if self._columns is None or self._columns[0] != gen:
                self._columns = (gen, self.collection.metadata_columns(max_values=COLUMN_VALUES))
            return self._columns[1]

    def check_filters(self, filters: dict[str, Sequence[str] | str] | None) -> dict[str, list[str]]:
        """Filters as lists of values; an unknown column is an error naming the valid ones."""
        return check_filters(filters, self.metadata_columns()) if filters else {}

    # ----------------------------------------------------------------- reading
    def query(self, *, image: QueryImage | None = None, item_id: str | None = None,
              attributes: bool = False, timings: dict[str, float] | None = None,
              max_pixels: int = MAX_PIXELS, source: str = "query", colour: bool = True) -> Query:
        """The query of an image (a file, encoded bytes or a PIL image) or of an indexed item
        (left out of its results); with ``attributes`` it carries the attribute vectors too, and
        without ``colour`` an image's query has no colour descriptor (a search with colour weight 0)."""
        if (image is None) == (item_id is None):
            raise VestisError("give either a query image or an item id")
        timings = {} if timings is None else timings
        if item_id is not None:
            timings.setdefault("embed", 0.0)
            return self._searcher(attributes).query_from_item(item_id)
        searcher = self._searcher(attributes, self.encoder)
        decoded = timings.get("decode", 0.0)  # Engine.run decodes an upload before it gets here
        t0 = time.perf_counter()
        if isinstance(image, Path):
            if not image.is_file():
                raise VestisError(f"no such image file: {image}")
            source, image = str(image), image.read_bytes()
        if isinstance(image, (bytes, bytearray)):
            image = decode_image(bytes(image), max_pixels=max_pixels, source=source)
        decode_ms = (time.perf_counter() - t0) * 1000
        if isinstance(searcher, AttributeSearcher):  # the attribute vectors from the same backbone pass
            query = searcher.query_from_image(image, timings, global_encoder=self.encoder)
        else:
            query = searcher.query_from_image(image, timings, colour=colour)
        timings["decode"] = decoded + decode_ms
        return query

    def _searcher(self, attributes: bool, encoder: ImageEncoder | None = None) -> Searcher | AttributeSearcher:
        if not attributes:
            return Searcher(self.collection, encoder)
        if self.attributes is None:
            raise VestisError("attribute search is not available for this collection (build an attribute "
                              f"index with `vestis attributes build --collection {self.collection.path}`)")
        return self.attributes

    def search(self, query: Query, *, k: int = 10, offset: int = 0,
               filters: dict[str, Sequence[str] | str] | None = None, attrs: str | Sequence[str] | None = None,
               colour_weight: float = 0.0, timings: dict[str, float] | None = None) -> SearchResponse:
        """The ``k`` best items after ``offset``: by the global embedding, or by the named
        attributes (``attrs``: free text or parsed weights) when given."""
        if isinstance(query, TextQuery):  # SearchQuery refuses attributes and colour with words
            checked = self.check_filters(filters)
            with self.collection.lock:
                return self.text.search(query, k=k, offset=offset, filters=checked or None, timings=timings)
        weights = attrs if isinstance(attrs, dict) else self.parse_attrs(attrs)
        checked = self.check_filters(filters)
        with self.collection.lock:
            if weights:
                if self.attributes is None or not isinstance(query, AttributeQuery):
                    raise VestisError("attribute search needs a query built with attributes=True "
                                      "on a collection with an attribute index")
                query.weights = weights
                return self.attributes.search(query, k=k, offset=offset, filters=checked or None,
                                              colour_weight=colour_weight, timings=timings)
            searcher = Searcher(self.collection)
            return searcher.search(query, k=k, offset=offset, filters=checked or None,
                                   colour_weight=colour_weight, timings=timings)

    def run(self, query: SearchQuery, *, timings: dict[str, float] | None = None,
            max_pixels: int = MAX_PIXELS) -> SearchOutcome:
        """Answer a :class:`~vestis.search.query.SearchQuery` from any surface: decode its image,
        cut the garment regions it asks for (each searched on its own, in its part of the
        catalogue), and search with the global, attribute or joint text-image space as its parts
        say."""
        timings = {} if timings is None else timings
        attrs = self.parse_attrs(query.attrs)
        filters = self.check_filters(query.filters)
        image = None
        if query.image is not None:
            t0 = time.perf_counter()
            image = decode_image(query.image, max_pixels=max_pixels, source=query.image_name)
            timings["decode"] = (time.perf_counter() - t0) * 1000
        mode = query.region_mode if image is not None else "none"
        if mode == "none":
            return self._outcome(query, *self._answer(query, image, attrs, filters, timings), None)
        t0 = time.perf_counter()
        # a named region is cut with the person too, so a missing one can say whether anyone was found
        found = self.regions.find(image, REGION_NAMES if mode == "auto" else list(dict.fromkeys([mode, "person"])))
        timings["regions"] = (time.perf_counter() - t0) * 1000
        if mode != "auto":
            person = any(r.name == "person" for r in found)
            found = [r for r in found if r.name == mode]
            if not found:
                raise NoRegionError(missing_region_message(mode, person))
        columns = self.metadata_columns() if query.region_scope else {}
        per_region = []
        for region in found:
            scope = region_scope(region.name, filters, columns)
            split = self.part_splits.get(self.collection, region.name, scope) if not query.is_text else None
            region_timings = timings if mode != "auto" else {}
            if split is None:
                response, _ = self._answer(query, region.image, attrs, {**filters, **scope}, region_timings)
            else:  # the region's results shared between the parts it may show (vestis.search.parts)
                embedded = self.query(image=region.image, attributes=bool(attrs), timings=region_timings,
                                      colour=bool(query.color_weight))
                response = split.search(embedded.vector, query.k, query.offset, lambda part, n: self.search(
                    embedded, k=n, filters={**filters, **part}, attrs=attrs, colour_weight=query.color_weight,
                    timings=region_timings))
            per_region.append(RegionHits(region, response, scope))
        if mode != "auto":
            return self._outcome(query, per_region[0].response, None, per_region)
        return self._outcome(query, *self._answer(query, image, attrs, filters, timings), per_region)

    def _answer(self, query: SearchQuery, image: Image.Image | None, attrs: dict[str, float],
                filters: dict[str, list[str]], timings: dict[str, float]) -> tuple[SearchResponse, TextQuery | None]:
        """One search of ``query``'s parts with ``image`` standing for its image."""
        if query.is_text:
            items = ([query.item_id] if query.item_id is not None else []) + list(query.positive)
            text = self.text_query(query.text, images=[(1.0, image)] if image is not None else [], items=items,
                                   negatives=query.negative, negative_images=query.negative_images,
                                   mode=query.mode, text_weight=query.text_weight, timings=timings)
            return self.search(text, k=query.k, offset=query.offset, filters=filters or None, timings=timings), text
        embedded = self.query(image=image, item_id=query.item_id, attributes=bool(attrs), timings=timings,
                              colour=bool(query.color_weight))
        return self.search(embedded, k=query.k, offset=query.offset, filters=filters or None, attrs=attrs,
                           colour_weight=query.color_weight, timings=timings), None

    @staticmethod
    def _outcome(query: SearchQuery, response: SearchResponse, text: TextQuery | None,
                 regions: list[RegionHits] | None) -> SearchOutcome:
        info = query.describe()
        if text is not None:
            info["mode"] = text.mode
        return SearchOutcome(response, regions, text.labels if text is not None else None, info)

    # ----------------------------------------------------------------- writing
    def index(self, catalogue: Catalogue, *, batch_size: int = 32, remove_missing: bool = True,
              progress: bool = True, attribute_model: Path | None = None, embed: Embedder | None = None,
              crop: str | None = None, skip_duplicates: float | None = None
              ) -> tuple[IngestReport, BuildReport | None, int]:
        """Bring the collection in line with ``catalogue`` (only new or changed images embedded),
        then embed the new items' attribute vectors (with ``attribute_model``, which becomes the
        collection's, or with the collection's own). ``crop`` indexes photos of people by that
        garment region (see :meth:`crop`). With ``skip_duplicates`` (a similarity threshold), new
        images that duplicate a stored item, or one added earlier in the run, are left out and
        reported. Returns the reports and how many photos showed no such region and were indexed whole."""
        transform = self.crop(crop)
        if transform is not None and embed is not None:
            raise VestisError("--crop runs the region finder where the images are read: it cannot be combined "
                              "with --ray yet")
        report = index_catalogue(self.collection, catalogue, self.encoder, batch_size=batch_size,
                                 remove_missing=remove_missing, progress=progress,
                                 embed=embed or local_embedder(transform),
                                 reject=None if skip_duplicates is None else DuplicateFilter(self.collection,
                                                                                             skip_duplicates))
        attributes = update_attributes(self.collection, attribute_model, progress=progress)
        if attributes is not None:
            self._attributes_checked = False  # a new model may have been installed
        update_joint(self.collection)
        return report, attributes, transform.whole if transform is not None else 0

    def crop(self, name: str | None = None) -> RegionCrop | None:
        """The garment region the collection's items are cut to (``vestis index --crop``): ``name``
        on a collection that has none yet (recorded with the finder's version), else the one it
        records; a different one is refused, since one collection holds one kind of picture."""
        recorded = self.collection.settings.get("crop")
        if name in (None, "none") and recorded is None:
            return None
        if name not in (None, "none", *REGION_NAMES):
            raise VestisError(f"--crop takes one of {', '.join(REGION_NAMES)} (got {name!r})")
        crop = RegionCrop(name or recorded.split()[0], self.regions)
        if recorded is None:
            if len(self.collection):
                raise VestisError(f"{self.collection.location} already holds whole photos: index cropped ones "
                                  "into a new collection")
            self.collection.set_setting("crop", crop.setting)
        elif name not in (None, crop.name) or recorded != crop.setting:
            raise VestisError(f"{self.collection.location} holds photos cut to '{recorded}'; "
                              f"cannot index them as '{crop.setting}': use a new collection")
        return crop

    def add(self, items: Sequence[CatalogueItem], *, catalogue: str) -> list[Item]:
        """Add new items, embedded by the item builder of ``vestis index`` (outside the collection
        lock, so searches go on meanwhile; cut to the collection's garment region if it has one);
        an id already present is refused. Their attribute vectors follow when the collection has an
        attribute model."""
        built: list[NewItem] = []
        for fresh, _same, failures, _reused in build_items(self.encoder, list(items), {}, catalogue, progress=False,
                                                          embed=local_embedder(self.crop())):
            if failures:
                raise ImageError("; ".join(f"{item_id}: {reason}" for item_id, _src, reason in failures))
            built += fresh
        with self.collection.lock:
            taken = [it.id for it in built if it.id in self.collection]
            if taken:
                raise DuplicateItemError(f"item(s) {', '.join(map(repr, taken))} already exist; "
                                         "delete them first to replace them")
            self.collection.upsert(built)
            added = [self.collection.get(it.id) for it in built]
        if self.attributes is not None:
            build_attribute_index(self.collection, self.attributes.model, progress=False)
        update_joint(self.collection)  # searchable in words at once
        return added

    def remove(self, item_ids: Sequence[str]) -> int:
        """Remove items by id (unknown ids are ignored); returns how many were removed."""
        return self.collection.remove(item_ids)

    def persist(self) -> None:
        """Save the derived files (vectors, index, attribute vectors) so the next open is fast."""
        self.collection.persist()
        if self.attributes is not None:
            self.attributes.index.save()
        if self._text is not None and self._text.index is not None:
            self._text.index.save()

    def info(self) -> dict[str, Any]:
        return self.collection.info()


def default_threads(workers: int) -> int:
    """Inference threads per worker, splitting the cores so concurrent queries do not oversubscribe."""
    return max(1, (os.cpu_count() or 1) // workers)


def _as_image(image: QueryImage) -> Image.Image:
    """A query image given as PIL, encoded bytes or a file path, decoded."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, Path):
        return decode_image(image.read_bytes(), source=str(image))
    return decode_image(bytes(image), max_pixels=MAX_PIXELS, source="query")
