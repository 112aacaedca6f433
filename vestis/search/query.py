"""One query model: whatever surface a search comes from (the CLI, ``POST /search``, a benchmark),
it is one :class:`SearchQuery`, checked here once, and answered by :meth:`Engine.run
<vestis.search.engine.Engine.run>`.

A query is a set of weighted parts: an image (encoded bytes), an
indexed item, words, more example items (``WEIGHT:ID``, rclip's prefix) and negative examples
(items or images), optionally cut to the garment regions of a photo of a person (``region``), and
searched in the named attribute spaces (``attrs``); plus filters, paging and colour fusion. The
rules for each part's range and for which parts go together live in :class:`SearchQuery` only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from vestis.encoders.regions import REGION_NAMES
from vestis.errors import VestisError
from vestis.search.results import MAX_COLOUR_WEIGHT, MAX_K, MAX_OFFSET

MAX_TEXT = 500  # characters of a text query
MAX_EXAMPLES = 50  # positive or negative examples of one query
MAX_WEIGHT = 100.0  # largest weight of one example; weights are ratios, so this is no real limit
MAX_ID = 1024  # characters of an item id in a query
REGION_MODES = ("auto", "none", *REGION_NAMES)
DEFAULT_REGION = "none"  # whole-photo search unless asked (see BENCHMARKS.md "Shop the look")
_WEIGHT = re.compile(r"^([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?):(.*)$", re.DOTALL)

MODES = ("keyword", "vector", "hybrid")


class QueryError(VestisError, ValueError):
    """A query whose parts do not go together, or a part out of its range."""


def parse_weighted(spec: str) -> tuple[float, str]:
    """``"2:ID"`` -> (2.0, "ID"); ``"ID"`` -> (1.0, "ID"). A weight is a decimal number in
    (0, MAX_WEIGHT]; a prefix that is no number is part of the id (ids may hold ``:``)."""
    spec = spec.strip()
    match = _WEIGHT.match(spec)
    weight, value = 1.0, spec
    if match:
        weight, value = float(match[1]), match[2].strip()
        _weight(weight, f"example {spec[:80]!r}")
    if not value:
        raise QueryError(f"bad example {spec[:80]!r}: write ID or WEIGHT:ID")
    if len(value) > MAX_ID:
        raise QueryError(f"an item id in a query has at most {MAX_ID} characters")
    return weight, value


@dataclass(frozen=True)
class SearchQuery:
    """A search, from any surface (see the module docstring). Every field is optional but one of
    ``image``, ``item_id``, ``text`` and ``positive``; a query that breaks a rule raises
    :class:`QueryError` when it is made."""

    image: bytes | None = None  # the query image, encoded (JPEG, PNG, ...)
    image_name: str = "query"  # where the image came from, for messages
    item_id: str | None = None  # more like this indexed item
    text: str | None = None  # words, alone or with the image / item
    positive: tuple[str, ...] = ()  # more like these items ('2:ID' weighs an item twice)
    negative: tuple[str, ...] = ()  # less like these items
    negative_images: tuple[tuple[float, bytes], ...] = ()  # less like these photos (weight, encoded image)
    mode: str | None = None  # keyword, vector or hybrid (default: hybrid with a joint model, else keyword)
    text_weight: float | None = None  # share of the text when combined with images or items
    attrs: str | tuple[str, ...] | None = None  # attribute names to search by ('a; b:2', RPF style)
    region: str | None = None  # auto, none, or a region name (see REGION_MODES)
    region_scope: bool = True  # a region searches its part of the catalogue where labels allow
    filters: Mapping[str, Sequence[str] | str] = field(default_factory=dict)
    k: int = 10
    offset: int = 0
    color_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("positive", "negative", "negative_images"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if isinstance(self.attrs, list):
            object.__setattr__(self, "attrs", tuple(self.attrs))
        self._check_values()
        self._check_parts()

    def _check_values(self) -> None:
        _integer("k", self.k, 1, MAX_K)
        _integer("offset", self.offset, 0, MAX_OFFSET)
        _number("color_weight", self.color_weight, 0.0, MAX_COLOUR_WEIGHT)
        if self.text_weight is not None:
            _number("text_weight", self.text_weight, 0.0, 1.0)
        if self.text is not None and not 1 <= len(self.text) <= MAX_TEXT:
            raise QueryError(f"text must have 1 to {MAX_TEXT} characters")
        if self.item_id is not None and not 1 <= len(self.item_id) <= MAX_ID:
            raise QueryError(f"an item id has 1 to {MAX_ID} characters")
        if self.mode is not None and self.mode not in MODES:
            raise QueryError(f"mode must be one of {', '.join(MODES)} (got {self.mode!r})")
        if self.region is not None and self.region not in REGION_MODES:
            raise QueryError(f"region must be one of {', '.join(REGION_MODES)} (got {self.region!r})")
        for what, examples in (("positive", self.positive), ("negative", self.negative + self.negative_images)):
            if len(examples) > MAX_EXAMPLES:
                raise QueryError(f"at most {MAX_EXAMPLES} {what} examples (got {len(examples)})")
        examples = self.positive + self.negative + ((self.item_id,) if self.item_id and self.is_text else ())
        for spec in examples:  # an item id in a text query is an example, weighed like the others
            parse_weighted(spec)
        for weight, _ in self.negative_images:
            _weight(weight, "negative image")

    def _check_parts(self) -> None:
        if self.image is not None and self.item_id is not None:
            raise QueryError("give at most one of an image and an item id")
        if self.image is None and self.item_id is None and self.text is None and not self.positive:
            raise QueryError("give an image, an item id, a text or positive examples")
        if self.is_text:
            if self.attrs:
                raise QueryError("attributes cannot be combined with text, positive or negative examples")
            if self.color_weight:
                raise QueryError("color_weight applies to image search only, not to text queries")
            if self.mode == "keyword" and (self.image is not None or self.item_id is not None or self.positive
                                           or self.negative or self.negative_images or self.text_weight is not None):
                raise QueryError("keyword search takes words only: use mode vector or hybrid to combine them "
                                 "with images, items or a text weight")
        if self.region not in (None, "none") and self.image is None:
            raise QueryError("region applies to a query image (a photo of a person)")

    @property
    def is_text(self) -> bool:
        """Whether the joint text-image space answers it (words, several examples, negatives)."""
        return bool(self.text is not None or self.positive or self.negative or self.negative_images
                    or self.mode or self.text_weight is not None)

    @property
    def region_mode(self) -> str:
        return self.region or DEFAULT_REGION

    def describe(self) -> dict[str, str]:
        """What kind of query this is, for a response (``{"type": "image"}``, ...)."""
        if self.is_text:
            return {"type": "text", **({"text": self.text} if self.text is not None else {})}
        if self.item_id is not None:
            return {"type": "item", "item_id": self.item_id}
        return {"type": "image"}


def _integer(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise QueryError(f"{name} must be a whole number between {low} and {high} (got {value!r})")


def _number(name: str, value: object, low: float, high: float) -> None:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not low <= value <= high):
        raise QueryError(f"{name} must be a finite number between {low:g} and {high:g} (got {value!r})")


def _weight(weight: float, what: str) -> None:
    if not (math.isfinite(weight) and 0 < weight <= MAX_WEIGHT):
        raise QueryError(f"bad {what}: its weight must be a number above 0 and at most {MAX_WEIGHT:g}")
