"""Queries against a collection: by image, by an indexed item, or by a vector; with metadata
filters, colour fusion, paging and a timing breakdown.

Scores are cosine similarities of the deep embeddings. With ``colour_weight`` w > 0 the score
becomes ``cos(deep) + w * sim(colour)``, where ``sim(colour)`` is the inner product of the
square-root colour histograms (Bhattacharyya coefficient, in [0, 1]). This is the
deep-fashion-retrieval fusion ``-d(deep) - 0.1 d(colour)`` written as a similarity.
"""

from __future__ import annotations

import time
import numpy as np
from PIL import Image

from vestis.data.images import decode_image
from vestis.encoders.base import ImageEncoder
from vestis.encoders.colour import colour_descriptor
from vestis.search.opening import open_collection_encoder
from vestis.search.results import Query, SearchResponse, check_options, hits_for, top_k
from vestis.store.collection import Collection

ANN_RERANK_FACTOR = 10  # ANN candidates fetched per wanted result when fusing colour


class Searcher:
    """The global search (a :class:`~vestis.search.results.VectorSearcher`): the deep embedding, through the
    collection's ANN index or an exact scan, with filters and colour fusion."""

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
    def query_from_image(self, image: Image.Image | bytes, timings: dict[str, float] | None = None) -> Query:
        """Embed an image (PIL image or encoded bytes); records decode/embed times in ``timings``."""
        timings = {} if timings is None else timings
        t0 = time.perf_counter()
        if isinstance(image, (bytes, bytearray)):
            image = decode_image(bytes(image), source="query")
        t1 = time.perf_counter()
        vector = self.encoder.embed_images([image])[0]
        colour = colour_descriptor(image) if self.collection.colour_dim else None
        t2 = time.perf_counter()
        timings["decode"] = (t1 - t0) * 1000
        timings["embed"] = (t2 - t1) * 1000
        return Query(vector, colour)

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
        timings = {} if timings is None else timings
        want = k + offset
        t0 = time.perf_counter()
        coll = self.collection
        with coll.lock:
            if getattr(coll, "searches_itself", False):  # a store that ranks on its server (Milvus)
                vids, scores, candidates = coll.search_vectors(
                    query.vector, want, filters=filters, exclude=query.exclude, colour=query.colour,
                    colour_weight=colour_weight)
            elif filters or not coll.uses_ann:
                vids, scores, candidates = self._score_table(query, coll.table(), filters, colour_weight, want)
            else:
                vids, scores, candidates = self._score_ann(query, coll.table(), colour_weight, want)
        t1 = time.perf_counter()
        hits = hits_for(coll, vids[offset:want], scores[offset:want])
        t2 = time.perf_counter()
        timings["search"] = (t1 - t0) * 1000
        timings["fetch_metadata"] = (t2 - t1) * 1000
        return SearchResponse(hits, timings, candidates)

    def _score_table(self, query, table, filters, colour_weight, want):
        all_vids, vectors, colours = table.view
        if filters:
            allowed = self.collection.filter_vids(filters)
            rows = table.rows_of(allowed[np.isin(allowed, all_vids)]) if len(allowed) else np.zeros(0, np.int64)
            vids, scores, colours = all_vids[rows], table.take(rows) @ query.vector, colours[rows]
        else:  # one pass over the table, which may stream from its file: nothing is gathered first
            vids, scores = all_vids, vectors @ query.vector
        if colour_weight:
            scores = scores + colour_weight * (colours @ query.colour)
        if query.exclude:
            keep = ~np.isin(vids, np.array(query.exclude, np.int64))
            vids, scores = vids[keep], scores[keep]
        order = top_k(scores, want)
        return vids[order], scores[order], len(vids)

    def _score_ann(self, query, table, colour_weight, want):
        index = self.collection.index()
        fetch = want + len(query.exclude)
        if colour_weight:
            fetch = max(fetch * ANN_RERANK_FACTOR, 200)
        scores, vids = index.search(query.vector[None, :].astype(np.float32), min(fetch, max(len(index), 1)))
        scores, vids = scores[0], vids[0]
        keep = (vids >= 0) & ~np.isin(vids, np.array(query.exclude, np.int64))
        scores, vids = scores[keep], vids[keep]
        if colour_weight and len(vids):
            rows = table.rows_of(vids)
            scores = (table.take(rows) @ query.vector) + colour_weight * (table.extra[rows] @ query.colour)
            order = top_k(scores, want)
            scores, vids = scores[order], vids[order]
        return vids[:want], scores[:want], len(table) - len(query.exclude)
