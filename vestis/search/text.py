"""Search in words: keyword (BM25), vector (the joint text-image space) and hybrid queries, and
queries composed of text, images and example items, with weights and negatives.

**Composition.** Every part of a query becomes a unit vector of the joint space: the text
through the text tower and head, an image through the collection's image encoder and the image
head, an indexed item by its stored joint vector. Examples are summed with their weights
(``2:ID`` counts twice, as rclip writes it) and negatives subtracted; the text is then mixed in
with ``text_weight``: ``q = normalise(a t + (1 - a) normalise(sum w_i e_i - sum w_j n_j))``.

**Hybrid.** The keyword ranking (BM25 over the items' words, :mod:`vestis.store.keyword_index`)
and the vector ranking are fused by reciprocal rank fusion, ``sum 1 / (60 + rank)`` (Cormack et
al. 2009), or by a weighted sum of the cosine and the BM25 score divided by the best BM25 score
of the query (``fusion="weighted"``). A hybrid query is also read for the label values it names
(:mod:`vestis.search.understand`): the items having them are a third candidate list, and in the
weighted fusion an item gains ``label_weight`` times the share of the named labels it has. The
defaults are the ones measured best on the validation split by ``vestis eval --text`` (BENCHMARKS.md).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vestis.encoders.joint import JointModel
from vestis.errors import VestisError
from vestis.search.query import parse_weighted
from vestis.index.topk import top_k
from vestis.search.results import SearchResponse, check_options
from vestis.search.searcher import respond
from vestis.search.understand import LabelVocabulary, Understanding
from vestis.store.collection import Collection
from vestis.store.factory import open_joint
from vestis.store.joint_index import JointIndex
from vestis.store.keyword_index import KeywordIndex
from vestis.store.nearest import nearest

MODES = ("keyword", "vector", "hybrid")
FUSIONS = ("rrf", "weighted")
RRF_K = 60
# defaults chosen on the validation split by `vestis eval --text` (BENCHMARKS.md, "Text search")
DEFAULT_FUSION = "weighted"
DEFAULT_TEXT_WEIGHT = 0.6  # text vs. images/examples in a composed query, vector mode
DEFAULT_HYBRID_TEXT_WEIGHT = 0.2  # the same in hybrid mode (the keyword side and the labels add the words)
DEFAULT_KEYWORD_WEIGHT = 0.5  # share of the BM25 score in weighted fusion
DEFAULT_LABEL_WEIGHT = 1.0  # bonus for having the label values read in the query (weighted fusion)
DEFAULT_LABEL_SIMILARITY = 0.6  # least similarity of query words and a label value to read it
DEFAULT_LABEL_MARGIN = 0.1  # other values of a column read when this close to its best
LABEL_SPACES = ("text", "joint")  # where query words and label values are compared
DEFAULT_LABEL_SPACE = "text"
CANDIDATES = 200  # items each ranking contributes to a fusion (at least; more for deep pages)


def _unit(vector: np.ndarray, what: str) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if norm < 1e-6:
        raise VestisError(f"{what} cancel out: nothing is left to search for (change the weights or drop a negative)")
    return (vector / norm).astype(np.float32)


def compose(text: np.ndarray | None, positives: Sequence[tuple[float, np.ndarray]] = (),
            negatives: Sequence[tuple[float, np.ndarray]] = (), text_weight: float = DEFAULT_TEXT_WEIGHT
            ) -> np.ndarray:
    """The joint-space query vector of a text and weighted examples (see the module docstring)."""
    if not 0 <= text_weight <= 1:
        raise VestisError(f"the text weight must be between 0 and 1 (got {text_weight})")
    if text is None and not positives:
        raise VestisError("a query needs a text or at least one positive example (negatives only refine)")
    if not positives and not negatives:
        return _unit(text, "the text")
    examples = sum((w * v for w, v in positives), np.zeros_like((positives or negatives)[0][1]))
    examples = examples - sum((w * v for w, v in negatives), np.zeros_like(examples))
    examples = _unit(examples, "the positive and negative examples")
    if text is None:
        return examples
    return _unit(text_weight * text + (1 - text_weight) * examples, "the text and the examples")


def reciprocal_rank_fusion(rankings: Sequence[np.ndarray], k: int = RRF_K) -> tuple[np.ndarray, np.ndarray]:
    """Fuse rankings of vids (best first) by ``sum 1 / (k + rank)``; returns (vids, scores), best first."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for position, vid in enumerate(ranking.tolist()):
            scores[vid] = scores.get(vid, 0.0) + 1.0 / (k + position + 1)
    vids = np.array(list(scores), np.int64)
    values = np.array(list(scores.values()), np.float32)
    order = top_k(values, len(values))
    return vids[order], values[order]


def weighted_fusion(vector: tuple[np.ndarray, np.ndarray], keyword: tuple[np.ndarray, np.ndarray],
                    keyword_weight: float = DEFAULT_KEYWORD_WEIGHT) -> tuple[np.ndarray, np.ndarray]:
    """``(1 - w) cos + w bm25 / max bm25`` over the union of both candidate lists (an item absent
    from the keyword list has BM25 0; one absent from the vector list gets the lowest cosine seen)."""
    vids_v, cos = vector
    vids_k, bm25 = keyword
    top = float(bm25.max()) if len(bm25) else 1.0
    floor = float(cos.min()) if len(cos) else 0.0
    scores: dict[int, list[float]] = {v: [c, 0.0] for v, c in zip(vids_v.tolist(), cos.tolist())}
    for v, b in zip(vids_k.tolist(), bm25.tolist()):
        scores.setdefault(v, [floor, 0.0])[1] = b / top
    vids = np.array(list(scores), np.int64)
    values = np.array([(1 - keyword_weight) * c + keyword_weight * b for c, b in scores.values()], np.float32)
    order = top_k(values, len(values))
    return vids[order], values[order]


@dataclass(frozen=True)
class Fusion:
    """How a hybrid query's rankings are fused: ``kind`` (rrf or weighted), the BM25 share and the
    label bonus of the weighted fusion."""

    kind: str = DEFAULT_FUSION
    keyword_weight: float = DEFAULT_KEYWORD_WEIGHT
    label_weight: float = DEFAULT_LABEL_WEIGHT

    def __post_init__(self) -> None:
        if self.kind not in FUSIONS:
            raise VestisError(f"fusion must be one of {', '.join(FUSIONS)} (got {self.kind!r})")

    def describe(self) -> str:
        return "rrf" if self.kind == "rrf" else f"weighted w={self.keyword_weight} labels={self.label_weight}"


@dataclass
class TextQuery:
    """A query in words and/or examples: ``text`` (for the keyword side), ``vector`` (the composed
    joint-space vector, None when there is no joint model), vids to leave out (the examples) and,
    in hybrid mode, the label values read in the text."""

    text: str | None = None
    vector: np.ndarray | None = None
    exclude: tuple[int, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    mode: str = "hybrid"  # the mode it was built for
    labels: Understanding = Understanding()


class TextSearcher:
    """Answers text, composed and example queries over one collection (keyword search needs no
    joint model; vector and hybrid search need the collection's joint index)."""

    def __init__(self, collection: Collection, index: JointIndex | None, model: JointModel | None):
        self.collection, self.index, self.model = collection, index, model
        self.keywords = KeywordIndex(collection)
        self._labels: dict[str, LabelVocabulary] = {}

    @classmethod
    def open(cls, collection: Collection, *, threads: int | None = None) -> TextSearcher:
        index = open_joint(collection)
        return cls(collection, index, index.load_model(threads) if index is not None else None)

    @property
    def default_mode(self) -> str:
        return "hybrid" if self.model is not None else "keyword"

    def _need_model(self, what: str) -> JointModel:
        if self.model is None:
            raise VestisError(f"{what} needs a joint text-image model: train one (vestis train --config "
                              f"configs/fashion-product-text.yaml) and add it with `vestis text build "
                              f"--collection {self.collection.location} --model RUN_DIR`")
        return self.model

    def labels(self, space: str = DEFAULT_LABEL_SPACE) -> LabelVocabulary:
        """The collection's label values (the joint model's title column left out), compared with
        query words in the text encoder's space (``text``) or after the joint text head (``joint``)."""
        if space not in LABEL_SPACES:
            raise VestisError(f"the label space must be one of {', '.join(LABEL_SPACES)} (got {space!r})")
        if space not in self._labels:
            model = self._need_model("reading label values in a query")
            self._labels[space] = LabelVocabulary(
                self.collection, model.text_encoder, skip_columns=[c for c in [model.meta.get("text", {}).get("column")] if c],
                project=model.embed_text_features if space == "joint" else None, rewrite=self.keywords.rewrite)
        return self._labels[space]

    def understand(self, text: str, min_similarity: float = DEFAULT_LABEL_SIMILARITY,
                   margin: float = DEFAULT_LABEL_MARGIN, space: str = DEFAULT_LABEL_SPACE,
                   timings: dict[str, float] | None = None) -> Understanding:
        """The label values ``text`` names (:mod:`vestis.search.understand`)."""
        t0 = time.perf_counter()
        understood = self.labels(space).understand(text, min_similarity, margin)
        if timings is not None:
            timings["understand"] = (time.perf_counter() - t0) * 1000
        return understood

    # ----------------------------------------------------------------- query parts
    def embed_text(self, text: str, timings: dict[str, float] | None = None) -> np.ndarray:
        t0 = time.perf_counter()
        vector = self._need_model("a text query by meaning").embed_text(self.keywords.rewrite(text).canonical)[0]
        if timings is not None:
            timings["embed_text"] = (time.perf_counter() - t0) * 1000
        return vector

    def embed_image_vector(self, image_vector: np.ndarray) -> np.ndarray:
        """An image-encoder vector of a query image -> the joint space."""
        return self._need_model("an image combined with text or examples").embed_image_features(
            np.asarray(image_vector, np.float32)[None, :])[0]

    def item_vector(self, item_id: str) -> tuple[int, np.ndarray]:
        """(vid, joint vector) of an indexed item."""
        self._need_model("searching with example items")
        vid = self.collection.get(item_id).vid
        vectors = self.index.stored_vectors(vid)
        if vectors is None:
            raise VestisError(f"item {item_id} has no joint vector yet: run `vestis text build`")
        return vid, vectors[0]

    def query(self, text: str | None = None, *, images: Sequence[tuple[float, np.ndarray]] = (),
              negative_images: Sequence[tuple[float, np.ndarray]] = (), items: Sequence[str] = (),
              negative_items: Sequence[str] = (), text_weight: float | None = None,
              mode: str | None = None) -> TextQuery:
        """Build a query: ``text``, image-encoder vectors of query images (weighted), example item ids
        (``WEIGHT:ID`` allowed) and negatives of both kinds. The default mode is :attr:`default_mode`
        with a text, vector without."""
        has_examples = bool(images or negative_images or items or negative_items)
        if mode is None and has_examples:  # no keyword default here: examples are searched by meaning
            self._need_model("combining words with images or items")
        mode = mode or (self.default_mode if text is not None else "vector")
        if mode not in MODES:
            raise VestisError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
        text = text.strip() if text is not None else None
        if text == "":
            raise VestisError("the text query is empty")
        if mode == "keyword":
            if has_examples:
                raise VestisError("keyword search takes text only; use --mode vector or hybrid with examples")
            if text is None:
                raise VestisError("keyword search needs a text")
            return TextQuery(text, mode=mode, labels=Understanding(rewrite=self.keywords.rewrite(text) or None))
        timings: dict[str, float] = {}
        t = self.embed_text(text, timings) if text is not None else None
        exclude: list[int] = []
        positives = [(w, self.embed_image_vector(v)) for w, v in images]
        negatives = [(w, self.embed_image_vector(v)) for w, v in negative_images]
        for specs, out in ((items, positives), (negative_items, negatives)):
            for spec in specs:
                weight, item_id = parse_weighted(spec)
                vid, vector = self.item_vector(item_id)
                out.append((weight, vector))
                exclude.append(vid)
        if text_weight is None:
            text_weight = DEFAULT_HYBRID_TEXT_WEIGHT if mode == "hybrid" else DEFAULT_TEXT_WEIGHT
        vector = compose(t, positives, negatives, text_weight)
        if mode != "hybrid" or text is None:
            rewrite = self.keywords.rewrite(text) if text is not None else None
            return TextQuery(None, vector, tuple(exclude), timings, mode, Understanding(rewrite=rewrite or None))
        return TextQuery(text, vector, tuple(exclude), timings, mode, self.understand(text, timings=timings))

    # ----------------------------------------------------------------- ranking
    def vector_ranking(self, vector: np.ndarray, want: int, allowed: np.ndarray | None = None,
                       exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """The ``want`` items nearest ``vector`` in the joint space (only ``allowed`` vids when given),
        by the searcher core (:func:`vestis.store.nearest.nearest`): through the ANN index when the
        joint index keeps one and nothing is filtered, else exactly."""
        with self.index.lock:
            ann = self.index.ann() if allowed is None else None
            vids, scores, _ = nearest(self.index.table(), vector[None, :], want, ann=ann, allowed=allowed,
                                      exclude=[exclude])
        found = vids[0] >= 0
        return vids[0][found], scores[0][found]

    def keyword_ranking(self, text: str, want: int, allowed: np.ndarray | None = None,
                        exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """The ``want`` best BM25 matches of ``text`` (only ``allowed`` vids when given)."""
        return self.keywords.search(text, want, allowed, exclude)

    def ranking(self, query: TextQuery, want: int, allowed: np.ndarray | None = None,
                fusion: Fusion = Fusion()) -> tuple[np.ndarray, np.ndarray]:
        """(vids, scores) of the best ``want`` items: keyword when the query has only text, vector
        when it has only a vector, hybrid (``fusion``) when it has both."""
        if query.vector is None:
            return self.keyword_ranking(query.text, want, allowed, query.exclude)
        if query.text is None:
            return self.vector_ranking(query.vector, want, allowed, query.exclude)
        depth = max(CANDIDATES, want)
        vector = self.vector_ranking(query.vector, depth, allowed, query.exclude)
        keyword = self.keyword_ranking(query.text, depth, allowed, query.exclude)
        labelled = None
        if query.labels.matches:  # the nearest of the items having every label read: a third candidate list
            having = self.labels().having(query.labels)
            if allowed is not None:
                having = np.intersect1d(having, allowed)
            if len(having):  # none (the filter rules the labels out): no third list
                labelled = self.vector_ranking(query.vector, depth, having, query.exclude)
        if fusion.kind == "rrf":
            vids, scores = reciprocal_rank_fusion([vector[0], keyword[0]] + ([labelled[0]] if labelled is not None else []))
            return vids[:want], scores[:want]
        if labelled is not None:
            merged = np.concatenate([vector[0], labelled[0]])
            merged, first = np.unique(merged, return_index=True)
            vector = (merged, np.concatenate([vector[1], labelled[1]])[first])
        vids, scores = weighted_fusion(vector, keyword, fusion.keyword_weight)
        if query.labels.matches and fusion.label_weight:
            scores = scores + fusion.label_weight * self.labels().match_share(query.labels, vids)
            order = top_k(scores, len(scores))
            vids, scores = vids[order], scores[order]
        return vids[:want], scores[:want]

    def search(self, query: TextQuery, *, k: int = 10, offset: int = 0,
               filters: dict[str, list[str]] | None = None, fusion: Fusion = Fusion(),
               timings: dict[str, float] | None = None) -> SearchResponse:
        """The top ``k`` items after ``offset`` for a query from :meth:`query`: keyword when it has
        only text, vector when it has only a vector, hybrid (``fusion``) when it has both."""
        check_options(k, offset, 0.0, has_colour=False)
        timings = {} if timings is None else timings
        timings.update(query.timings)

        def rank(want: int) -> tuple[np.ndarray, np.ndarray, int]:
            allowed = self.collection.filter_vids(filters) if filters else None
            vids, scores = self.ranking(query, want, allowed, fusion)
            return vids, scores, len(allowed) if allowed is not None else len(self.collection)

        return respond(self.collection, rank, k, offset, timings)
