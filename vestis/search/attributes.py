"""Search by image and attributes: "items with the same sleeve length and colour as this photo".

**Parsing.** Attribute text is free (RPF: ``"sleeve length; collar design"``): it is split on
``;`` ``,`` ``+`` and the words ``and`` / ``with``; each part names an attribute, optionally with a
weight (``"colour:2; sleeve length"``). A part matches an attribute of the collection when, once
lower-cased with spaces, ``_`` and ``-`` removed (and a trailing ``labels``, as in FashionAI's
``sleeve_length_labels``), it equals the attribute's name, its singular, or a synonym of it
(:data:`SYNONYMS`: "color" is colour, "neck line" is neckline, "collar design" is collar,
"article type" and "type" are articleType or category, ...). With a text encoder
(:func:`parse_attributes_by_meaning`), a part that matches nothing is read as the attribute whose
name is nearest in meaning ("arm length" -> sleeve length, "hue" -> colour) when the cosine
similarity of their sentence embeddings is at least :data:`NEAREST_MIN_SIMILARITY`; the caller
is told which attribute was used. Text that matches nothing is an error listing the valid
attributes.

**Scoring.** Each attribute has its own embedding space; an item's score is the weighted sum of
its per-attribute cosine similarities to the query, ``sum_a w_a cos(q_a, x_a)`` (weights default
to 1), ranked exactly over the in-memory attribute table. Without attributes, search uses the
global embedding (:class:`vestis.search.searcher.Searcher`).

**Colour.** For a colour attribute (``colour``, ``baseColour``) of a collection that keeps the
hand-made colour descriptor, the attribute's term is the mean of the learned colour similarity and
the descriptor's similarity (Bhattacharyya coefficient of the square-root histograms): on the
test splits of the Clothing Attribute Dataset and Fashion Product Images small this fusion beat
either alone (BENCHMARKS.md, attribute retrieval).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from vestis.data.images import decode_image
from vestis.encoders.attribute_encoder import AttributeEncoder
from vestis.encoders.base import ImageEncoder
from vestis.encoders.colour import colour_descriptor
from vestis.encoders.onnx_encoder import OnnxEncoder
from vestis.encoders.text import TextEncoder
from vestis.errors import VestisError
from vestis.search.query import MAX_WEIGHT
from vestis.search.results import Query, SearchResponse, check_options, hits_for
from vestis.store.attribute_index import AttributeIndex
from vestis.store.collection import Collection
from vestis.store.factory import open_attributes

COLOUR_ATTRIBUTES = {"colour", "color", "basecolour", "basecolor"}  # normalised names
NEAREST_MIN_SIMILARITY = 0.5  # chosen on a handful of phrases with and without a right answer (BENCHMARKS.md)
SPELLED_OUT = {"sleevelength": "sleeve length", "neckline": "neck line"}  # names written as one word
COLOUR_FUSION = 1.0  # descriptor weight beside the learned colour, chosen by measurement (BENCHMARKS.md)
_SEPARATORS = re.compile(r"\s*(?:[;,+]|\band\b|\bwith\b)\s*", re.IGNORECASE)
_WEIGHT = re.compile(r"^(?P<name>.*?)\s*[:=]\s*(?P<weight>[^:=]*)$")

# Normalised phrase -> the attribute names it may mean, in order of preference (the first one the
# collection has wins). Keys and names are compared in normalised form (see ``normalise``).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "color": ("colour", "baseColour", "basecolor"),
    "colour": ("colour", "baseColour", "basecolor"),
    "basecolor": ("baseColour", "colour"),
    "basecolour": ("baseColour", "colour"),
    "sleeve": ("sleevelength", "sleeve_length_labels"),
    "sleeves": ("sleevelength", "sleeve_length_labels"),
    "sleevetype": ("sleevelength", "sleeve_length_labels"),
    "sleevelength": ("sleevelength", "sleeve_length_labels"),
    "neck": ("neckline", "neck_design_labels", "neckline_design_labels"),
    "neckline": ("neckline", "neckline_design_labels", "neck_design_labels"),
    "necklinedesign": ("neckline_design_labels", "neckline"),
    "neckdesign": ("neck_design_labels", "neckline"),
    "collar": ("collar", "collar_design_labels"),
    "collardesign": ("collar_design_labels", "collar"),
    "collartype": ("collar", "collar_design_labels"),
    "lapel": ("lapel_design_labels",),
    "pattern": ("pattern",),
    "print": ("pattern",),
    "texture": ("pattern",),
    "type": ("articleType", "category"),
    "category": ("category", "articleType", "masterCategory"),
    "articletype": ("articleType", "category"),
    "article": ("articleType", "category"),
    "producttype": ("articleType", "category"),
    "garmenttype": ("category", "articleType"),
    "subcategory": ("subCategory",),
    "gender": ("gender",),
    "sex": ("gender",),
    "usage": ("usage",),
    "occasion": ("usage",),
    "season": ("season",),
    "skirtlength": ("skirt_length_labels",),
    "coatlength": ("coat_length_labels",),
    "pantlength": ("pant_length_labels",),
    "trouserlength": ("pant_length_labels",),
    "length": ("skirt_length_labels", "coat_length_labels", "pant_length_labels"),
}


def normalise(text: str) -> str:
    """Lower case, without spaces, ``_``, ``-`` or a trailing "labels" ("Sleeve_Length_labels" is
    "sleevelength")."""
    key = re.sub(r"[\s_\-]+", "", text.lower())
    return key.removesuffix("labels") or key


def split_attribute_text(text: str) -> list[str]:
    """The parts of free attribute text: ``"sleeve length and colour:2"`` -> ["sleeve length", "colour:2"]."""
    return [p.strip() for p in _SEPARATORS.split(text) if p and p.strip()]


def match_attribute(phrase: str, valid: Sequence[str]) -> str | None:
    """The attribute of ``valid`` that ``phrase`` names (by name, singular or synonym), or None."""
    by_key = {normalise(v): v for v in valid}
    key = normalise(phrase)
    for candidate in (key, key.removesuffix("s"), key.removesuffix("es")):
        if candidate in by_key:
            return by_key[candidate]
        for name in SYNONYMS.get(candidate, ()):
            if normalise(name) in by_key:
                return by_key[normalise(name)]
    return None


def attribute_phrase(name: str) -> str:
    """An attribute name as words: "sleeve_length_labels" -> "sleeve length", "baseColour" -> "base colour"."""
    words = re.sub(r"([a-z])([A-Z])", r"\1 \2", name).replace("_", " ").replace("-", " ").lower().split()
    words = words[:-1] if words[-1:] == ["labels"] else words
    return " ".join(SPELLED_OUT.get(w, w) for w in words)


def nearest_attribute(phrase: str, valid: Sequence[str], encoder: TextEncoder) -> tuple[str, float] | None:
    """The attribute of ``valid`` nearest ``phrase`` in meaning and the similarity, or None when
    none reaches :data:`NEAREST_MIN_SIMILARITY`."""
    if not valid:
        return None
    vectors = encoder.embed([phrase, *(attribute_phrase(v) for v in valid)])
    similarity = vectors[1:] @ vectors[0]
    best = int(np.argmax(similarity))
    return (valid[best], float(similarity[best])) if similarity[best] >= NEAREST_MIN_SIMILARITY else None


def parse_attributes_by_meaning(raw: str | Sequence[str] | None, valid: Sequence[str],
                                text_encoder: Callable[[], TextEncoder]
                                ) -> tuple[dict[str, float], dict[str, tuple[str, float]]]:
    """:func:`parse_attributes`, reading a part that names no attribute as the nearest one in
    meaning (``text_encoder()`` is called only then); returns the weights and, for each part so
    read, (attribute, similarity)."""
    resolved: dict[str, tuple[str, float]] = {}

    def resolve(part: str) -> str | None:
        found = nearest_attribute(part, valid, text_encoder())
        if found is not None:
            resolved[part] = found
        return found[0] if found else None

    return parse_attributes(raw, valid, resolve=resolve), resolved


def parse_attributes(raw: str | Sequence[str] | None, valid: Sequence[str],
                     resolve: Callable[[str], str | None] | None = None) -> dict[str, float]:
    """Attribute names -> weights, in the order given, from free text or a list of parts.

    ``resolve`` reads a part that matches no attribute by name or synonym (None: it matches
    nothing). Raises VestisError naming the valid attributes when a part matches none, or when a
    weight is not a positive number. A part given twice adds its weights. Empty input gives {}
    (global search)."""
    texts = [raw] if isinstance(raw, str) else list(raw or [])
    parts = [p for t in texts for p in split_attribute_text(str(t))]
    if not parts:
        return {}
    listing = ", ".join(valid) if valid else "none (build an attribute index with `vestis attributes build`)"
    weights: dict[str, float] = {}
    unknown = []
    for part in parts:
        weight = 1.0
        m = _WEIGHT.match(part)
        if m:
            part = m["name"].strip()
            try:
                weight = float(m["weight"])
            except ValueError:
                raise VestisError(
                    f"the weight of {part!r} must be a number, got {m['weight']!r} (write e.g. 'colour:2')"
                ) from None
            if not (math.isfinite(weight) and 0 < weight <= MAX_WEIGHT):
                raise VestisError(f"the weight of {part!r} must be a number above 0 and at most {MAX_WEIGHT:g}, "
                                  f"got {m['weight'][:40]!r}")
        name = match_attribute(part, valid) if part else None
        if name is None and part and resolve is not None:
            name = resolve(part)
        if name is None:
            unknown.append(part)
            continue
        weights[name] = weights.get(name, 0.0) + weight
    if unknown:
        raise VestisError(
            f"unknown attribute(s) {', '.join(map(repr, unknown))}; valid attributes: {listing}"
        )
    return weights


@dataclass
class AttributeQuery(Query):
    """A query that carries, besides the global embedding, every attribute's vector (attributes x
    dim; None when the item it comes from has not been embedded by the attribute model yet) and
    the weights of the attributes to search by (from :func:`parse_attributes`)."""

    attributes: np.ndarray | None = None
    weights: dict[str, float] = field(default_factory=dict)


class AttributeSearcher:
    """Searches a collection's attribute index with the collection's attribute model."""

    def __init__(self, collection: Collection, index: AttributeIndex, model: AttributeEncoder):
        index.check_model(model)
        self.collection, self.index, self.model = collection, index, model

    @classmethod
    def open(
        cls, collection: Collection, *, backbone: OnnxEncoder | None = None, threads: int | None = None
    ) -> AttributeSearcher:
        """The searcher of the collection's attribute index; ``backbone`` is shared with the global
        search when it is the attribute model's backbone (one backbone pass per query image)."""
        index = open_attributes(collection)
        if index is None:
            raise VestisError(
                f"collection {collection.path} has no attribute index: build one with "
                f"`vestis attributes build --collection {collection.path} --model MODEL.onnx`"
            )
        return cls(collection, index, index.load_model(threads, backbone))

    @property
    def attributes(self) -> list[str]:
        return self.index.attributes

    @property
    def encoder(self) -> OnnxEncoder:
        """The backbone that embeds query images (loaded with the model)."""
        return self.model.backbone

    def parse(self, raw: str | Sequence[str] | None) -> dict[str, float]:
        return parse_attributes(raw, self.attributes)

    def embed(
        self, image: Image.Image, global_encoder: ImageEncoder | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(global embedding, attribute vectors) of one image: one backbone pass when
        ``global_encoder`` is the attribute model's backbone (or None), else one pass of each."""
        if global_encoder is None or global_encoder.version == self.model.backbone.version:
            vectors, attributes = self.model.embed_images_with_global([image])
            return vectors[0], attributes[0]
        return global_encoder.embed_images([image])[0], self.model.embed_images([image])[0]

    def query_from_image(
        self,
        image: Image.Image | bytes,
        timings: dict[str, float] | None = None,
        *,
        global_encoder: ImageEncoder | None = None,
    ) -> AttributeQuery:
        """The query of an image (PIL or encoded bytes): global embedding, attribute vectors and,
        when the collection keeps them, the colour descriptor; records decode/embed times."""
        timings = {} if timings is None else timings
        t0 = time.perf_counter()
        if isinstance(image, (bytes, bytearray)):
            image = decode_image(bytes(image), source="query")
        t1 = time.perf_counter()
        vector, attributes = self.embed(image, global_encoder)
        descriptor = colour_descriptor(image) if self.collection.colour_dim else None
        timings["decode"] = (t1 - t0) * 1000
        timings["embed"] = (time.perf_counter() - t1) * 1000
        return AttributeQuery(vector, descriptor, attributes=attributes)

    def query_from_item(self, item_id: str) -> AttributeQuery:
        """ "More like this": an indexed item's stored vectors; the item is left out of the results."""
        vid = self.collection.get(item_id).vid
        vector, colour = self.collection.vector_of(item_id)
        return AttributeQuery(vector, colour, exclude=(vid,), attributes=self.index.stored_vectors(vid))

    def search(
        self,
        query: AttributeQuery,
        *,
        k: int = 10,
        offset: int = 0,
        filters: dict[str, list[str]] | None = None,
        colour_weight: float = 0.0,
        timings: dict[str, float] | None = None,
    ) -> SearchResponse:
        """Top-k items by the weighted sum of per-attribute cosine similarities to the query's
        attribute vectors, weighted by ``query.weights`` (a colour attribute fused with the colour
        descriptor, see the module docstring; plus ``colour_weight`` x colour similarity, as in the
        global search). Same signature as :meth:`Searcher.search`."""
        weights = query.weights
        if query.attributes is None:
            raise VestisError("the query item has no attribute vectors yet: run `vestis attributes build`")
        check_options(k, offset, colour_weight,
                      has_colour=query.colour is not None and bool(self.collection.colour_dim))
        if not weights:
            raise VestisError("name at least one attribute (or search without attributes)")
        unknown = [w for w in weights if w not in self.attributes]
        if unknown:
            raise VestisError(
                f"unknown attribute(s) {unknown}; valid attributes: {', '.join(self.attributes)}"
            )
        timings = {} if timings is None else timings
        t0 = time.perf_counter()
        dim = self.index.dim
        fuse = query.colour is not None and bool(self.collection.colour_dim)
        per_attribute = {}
        for name, weight in weights.items():
            if fuse and normalise(name) in COLOUR_ATTRIBUTES:  # learned colour and descriptor, averaged
                colour_weight += weight * COLOUR_FUSION / (1 + COLOUR_FUSION)
                weight = weight / (1 + COLOUR_FUSION)
            per_attribute[self.attributes.index(name)] = weight
        vector = np.zeros(len(self.attributes) * dim + self.collection.colour_dim, np.float32)
        for a, weight in per_attribute.items():
            vector[a * dim : (a + 1) * dim] = weight * query.attributes[a]
        if colour_weight:
            vector[len(self.attributes) * dim :] = colour_weight * query.colour
        vids, scores, candidates = self.index.search_weighted(vector, k + offset, filters=filters,
                                                              exclude=query.exclude)
        return self._response(vids[offset:], scores[offset:], candidates, timings, t0)

    def _response(self, vids, scores, candidates, timings, t0) -> SearchResponse:
        t1 = time.perf_counter()
        hits = hits_for(self.collection, vids, scores)
        timings["search"] = (t1 - t0) * 1000
        timings["fetch_metadata"] = (time.perf_counter() - t1) * 1000
        return SearchResponse(hits, timings, candidates)
