"""Request and response bodies of the HTTP API (pydantic; they make the OpenAPI schema)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from vestis.search.engine import SearchOutcome
from vestis.search.query import MAX_EXAMPLES, MAX_ID, MAX_TEXT, QueryError, SearchQuery
from vestis.search.results import MAX_COLOUR_WEIGHT, MAX_K, MAX_OFFSET, SearchResponse

MAX_PAGE = 100  # items per page of GET /items
MAX_BROWSE_OFFSET = 1_000_000_000  # past any catalogue's end, within SQLite's integers

Attrs = str | list[str] | None
Filters = dict[str, list[str] | str]


def image_url(item_id: str) -> str:
    return f"/images/{quote(item_id, safe='')}"


class SearchRequest(BaseModel):
    """JSON body of ``POST /search`` (and the text fields of its multipart form): the wire format of
    a :class:`~vestis.search.query.SearchQuery`, which checks how the parts go together."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "anyOf": [{"required": ["image_base64"]}, {"required": ["item_id"]}, {"required": ["text"]},
                  {"required": ["positive"]}]})

    image_base64: str | None = Field(None, description="The query image, base64 (a data: URL is accepted).")
    item_id: str | None = Field(None, max_length=MAX_ID, description="Search with an indexed item ('more like this').")
    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT,
                             description="Search in words, alone or with the image / item.")
    positive: list[str] = Field(default_factory=list, max_length=MAX_EXAMPLES,
                                description="More like these item ids ('2:ID' weighs an item twice).")
    negative: list[str] = Field(default_factory=list, max_length=MAX_EXAMPLES,
                                description="Less like these item ids ('WEIGHT:ID' allowed).")
    mode: Literal["keyword", "vector", "hybrid"] | None = Field(
        None, description="Text search mode (default: hybrid when the collection has a joint model, else keyword).")
    text_weight: float | None = Field(None, ge=0.0, le=1.0, strict=True, allow_inf_nan=False,
                                      description="Share of the text when it is combined with images or items.")
    attrs: Attrs = Field(None, description="Attribute names to search by, as a list or 'a; b' (RPF style).")
    region: Literal["auto", "none", "top", "bottom", "shoes", "person"] | None = Field(None, description=(
        "A photo of a person: 'auto' searches each garment region found (top, bottom, shoes, person) and answers "
        "per region in 'regions'; a region name searches that one; 'none' (the default) the whole photo."))
    region_scope: bool = Field(True, strict=True, description=(
        "A region searches the matching part of the catalogue where its labels allow (footwear for shoes)."))
    filters: Filters = Field(
        default_factory=dict,
        description='Metadata equality filters: {"baseColour": ["Blue", "Navy Blue"]} keeps items whose '
        "baseColour is either value; several keys must all match.",
    )
    # Strict: JSON true or 1.5 is not a count; non-finite weights are refused before the range check.
    k: int = Field(10, ge=1, le=MAX_K, strict=True, description="Number of results.")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, strict=True, description="Results to skip (paging).")
    color_weight: float = Field(0.0, ge=0.0, le=MAX_COLOUR_WEIGHT, strict=True, allow_inf_nan=False,
                                description="Weight of colour similarity added to the deep similarity.")

    def to_query(self, image: bytes | None = None, image_name: str = "upload") -> SearchQuery:
        """The query (``image``: an uploaded file, else ``image_base64`` decoded)."""
        fields = self.model_dump(exclude={"image_base64"})
        if self.image_base64 is not None:
            image = decode_base64(self.image_base64)
        return SearchQuery(image=image, image_name=image_name, **fields)


_INT_TEXT = re.compile(r"[+-]?[0-9]{1,18}")
_NUMBER_FIELDS = {"k": int, "offset": int, "color_weight": float, "text_weight": float}
_BOOL_FIELDS = {"region_scope"}


def form_numbers(fields: dict[str, Any]) -> dict[str, Any]:
    """Multipart form fields with the numeric and yes/no options' text turned into numbers and
    booleans (form fields are all text; the strict model takes numbers only). Text that is no
    number stays text, and is refused."""
    out = dict(fields)
    for key, kind in _NUMBER_FIELDS.items():
        text = out.get(key)
        if not isinstance(text, str):
            continue
        text = text.strip()
        if kind is int and _INT_TEXT.fullmatch(text):
            out[key] = int(text)
        elif kind is float and len(text) <= 64:
            with contextlib.suppress(ValueError):
                out[key] = float(text)
    for key in _BOOL_FIELDS & set(out):
        out[key] = {"true": True, "1": True, "false": False, "0": False}.get(str(out[key]).strip().lower(), out[key])
    return out


def decode_base64(text: str) -> bytes:
    """``image_base64`` (a ``data:`` URL accepted) -> bytes."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise QueryError("image_base64 is not valid base64") from None


class SearchResult(BaseModel):
    id: str
    score: float = Field(description="Cosine similarity (plus color_weight x colour similarity).")
    metadata: dict[str, Any]
    image_url: str


class RegionResults(BaseModel):
    name: str = Field(description="top, bottom, shoes or person.")
    box: list[int] = Field(description="The region in the query photo: x0, y0, x1, y1 in pixels.")
    score: float = Field(description="How sure the region finder is, 0..1.")
    scope: dict[str, list[str]] = Field(description="The part of the catalogue the region searched (labels).")
    results: list[SearchResult]


class SearchResults(BaseModel):
    results: list[SearchResult] = Field(description="The whole photo's results, or the one region's asked for.")
    regions: list[RegionResults] | None = Field(
        None, description="With region 'auto' or a region name: each region found with its results.")
    candidates: int = Field(description="Items eligible after filters.")
    k: int
    offset: int
    query: dict[str, str] = Field(description='{"type": "image"}, {"type": "item", "item_id": ...} or '
                                  '{"type": "text", "mode": ..., "understood": the label values read in the words}.')
    timings_ms: dict[str, float] = Field(description="decode, embed, search, fetch_metadata, queue and total.")

    @classmethod
    def build(cls, outcome: SearchOutcome, *, k: int, offset: int, timings_ms: dict[str, float]) -> SearchResults:
        info = dict(outcome.info)
        if outcome.understood:
            info["understood"] = outcome.understood.describe()
        regions = None if outcome.regions is None else [
            RegionResults(name=r.region.name, box=list(r.region.box), score=round(r.region.score, 4), scope=r.scope,
                          results=_results(r.response)) for r in outcome.regions]
        return cls(results=_results(outcome.response), regions=regions, candidates=outcome.response.candidates, k=k,
                   offset=offset, query=info, timings_ms={key: round(v, 3) for key, v in timings_ms.items()})


def _results(response: SearchResponse) -> list[SearchResult]:
    return [SearchResult(id=h.id, score=round(h.score, 6), metadata=h.metadata, image_url=image_url(h.id))
            for h in response.hits]


class SubmitRequest(BaseModel):
    """RPF ``POST /submit`` body."""

    img_path: str = Field(min_length=1, max_length=4096,
                          description="An item id of the collection, or an image file under an allowed folder.")
    attrs: Attrs = Field(None, description="Attribute names, 'sleeve length; collar design'.")


class SubmitResponse(BaseModel):
    ids: list[str]
    similarities: list[float]
    retrieval_times: float = Field(description="Seconds spent on the query (embedding and search).")


class ItemOut(BaseModel):
    id: str
    metadata: dict[str, Any]
    image_url: str
    similar_url: str

    @classmethod
    def of(cls, item_id: str, metadata: dict[str, Any]) -> ItemOut:
        return cls(id=item_id, metadata=metadata, image_url=image_url(item_id),
                   similar_url=f"/similar/{quote(item_id, safe='')}")


class ItemPage(BaseModel):
    items: list[ItemOut]
    total: int = Field(description="Items in the collection.")
    offset: int
    limit: int


class DuplicatePair(BaseModel):
    a: str
    b: str
    score: float = Field(description="(cosine + 0.5 x colour similarity) / 1.5")


class DuplicateGroupOut(BaseModel):
    ids: list[str] = Field(description="An item and the items that duplicate it.")
    pairs: list[DuplicatePair]


class Duplicates(BaseModel):
    threshold: float
    items: int = Field(description="Items compared.")
    groups: int = Field(description="Groups found (all of them, before paging).")
    offset: int
    duplicates: list[DuplicateGroupOut] = Field(description="Groups, largest first, a page of them.")
    seconds: float = Field(description="How long the scan took (a cached answer: the first scan's time).")


class Deleted(BaseModel):
    id: str
    removed: bool


class Synonyms(BaseModel):
    text: str = Field(description="The collection's own synonyms file, as stored (empty: the shipped vocabulary "
                      "only).")
    entries: int = Field(description="Its entries.")


class ColumnValue(BaseModel):
    value: str
    count: int


class Column(BaseModel):
    name: str
    values: list[ColumnValue] = Field(description="The most frequent values, most frequent first.")
    filterable: bool = Field(description="Whether the column suits a filter: few distinct values that repeat "
                             "(false for id-like columns such as names).")


class Info(BaseModel):
    name: str
    items: int
    encoder: str
    encoder_version: str
    dim: int
    index: str = Field(description="The index searched now (what `auto` resolved to, if it is the setting).")
    index_setting: str = Field(description="The collection's index spec setting, e.g. `auto`.")
    generation: int
    colour: bool
    attributes: list[str]
    columns: list[Column]
    max_k: int
    max_upload_bytes: int
    max_pixels: int
    writes_need_api_key: bool


class Health(BaseModel):
    status: str
    items: int
    uptime_s: float
    startup_s: float
