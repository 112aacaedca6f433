"""Queries against a collection: by image, by an indexed item, or by a vector; with metadata
filters, colour fusion, paging and a timing breakdown.

Scores are cosine similarities of the deep embeddings. With ``colour_weight`` w > 0 the score
becomes ``cos(deep) + w * sim(colour)``, where ``sim(colour)`` is the inner product of the
square-root colour histograms (Bhattacharyya coefficient, in [0, 1]). This is the
deep-fashion-retrieval fusion ``-d(deep) - 0.1 d(colour)`` written as a similarity.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from vestis.data.images import decode_image
from vestis.encoders.base import ImageEncoder
from vestis.encoders.colour import colour_descriptor
from vestis.search.opening import open_collection_encoder
from vestis.search.results import Query, SearchResponse, check_options, hits_for
from vestis.store.collection import Collection


class Searcher:
    """The global search: the deep embedding, ranked by the collection (its ANN index or an exact
    scan), with filters and colour fusion."""

    def __init__(self, collection: Collection, encoder: ImageEncoder | None = None) -> None:
        self.collection = collection
        if encoder is not None:
            collection.check_encoder(encoder.version)
        self._encoder = encoder

    @property
    def encoder(self) -> ImageEncoder:
        if self._encoder is None:
            self._encoder = open_collection_encoder(self.collection)
        return self._encoder

    # ----------------------------------------------------------------- building queries
    def query_from_image(self, image: Image.Image | bytes, timings: dict[str, float] | None = None, *,
                         colour: bool = True) -> Query:
        """Embed an image (PIL image or encoded bytes); records decode/embed times in ``timings``.
        ``colour=False`` leaves out the colour descriptor (about 1 ms), for a search without colour weight."""
        timings = {} if timings is None else timings
        t0 = time.perf_counter()
        if isinstance(image, (bytes, bytearray)):
            image = decode_image(bytes(image), source="query")
        t1 = time.perf_counter()
        vector = self.encoder.embed_images([image])[0]
        descriptor = colour_descriptor(image) if colour and self.collection.colour_dim else None
        t2 = time.perf_counter()
        timings["decode"] = (t1 - t0) * 1000
        timings["embed"] = (t2 - t1) * 1000
        return Query(vector, descriptor)

    def query_from_item(self, item_id: str) -> Query:
        """"More like this": the stored vectors of an indexed item, which is left out of the results."""
        vector, colour = self.collection.vector_of(item_id)
        return Query(vector, colour, exclude=(self.collection.get(item_id).vid,))

    # ----------------------------------------------------------------- searching
    def search(
        self,
        query: Query,
        *,
        k: int = 10,
        offset: int = 0,
        filters: dict[str, list[str]] | None = None,
        colour_weight: float = 0.0,
        timings: dict[str, float] | None = None,
    ) -> SearchResponse:
        check_options(k, offset, colour_weight, has_colour=bool(self.collection.colour_dim) and query.colour is not None)
        coll = self.collection

        def rank(want: int) -> tuple[np.ndarray, np.ndarray, int]:
            with coll.lock:
                return coll.search_vectors(query.vector, want, filters=filters, exclude=query.exclude,
                                           colour=query.colour, colour_weight=colour_weight)

        return respond(coll, rank, k, offset, timings)


def respond(collection: Collection, rank: Callable[[int], tuple[np.ndarray, np.ndarray, int]], k: int, offset: int,
            timings: dict[str, float] | None) -> SearchResponse:
    """What every searcher answers: ``rank(want)`` gives the ``want`` = k + offset best vids and
    scores and how many items were eligible; the page after ``offset`` becomes hits with their
    metadata, both steps timed (``search``, ``fetch_metadata``)."""
    timings = {} if timings is None else timings
    want = k + offset
    t0 = time.perf_counter()
    vids, scores, candidates = rank(want)
    t1 = time.perf_counter()
    hits = hits_for(collection, vids[offset:want], scores[offset:want])
    timings["search"] = (t1 - t0) * 1000
    timings["fetch_metadata"] = (time.perf_counter() - t1) * 1000
    return SearchResponse(hits, timings, candidates)
