"""Search routes: ``POST /search`` (upload, base64 or item id) and the RPF-compatible ``POST /submit``."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile

from vestis.api.deps import ServiceDep, json_field, read_upload, validate
from vestis.api.errors import InvalidRequestError, UnsupportedMediaTypeError
from vestis.api.models import (
    SearchOptions,
    SearchRequest,
    SearchResults,
    SubmitRequest,
    SubmitResponse,
    TextOptions,
    form_numbers,
)
from vestis.api.service import Service
from vestis.search.results import MAX_K, SearchResponse
from vestis.search.results import Query as EmbeddedQuery
from vestis.search.text import TextQuery

router = APIRouter(tags=["search"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": why, "content": {"application/json": {"example": {"detail": why}}}}
    for code, why in [
        (400, "Bad request (e.g. img_path is a URL)"),
        (403, "img_path is outside the allowed folders"),
        (404, "Unknown item or image file"),
        (413, "Upload over the size limit"),
        (415, "Unsupported content type"),
        (422, "Invalid input: not an image, too many pixels, unknown attribute or filter column, k out of range"),
    ]
}

_FORM_SCHEMA = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "The query image."},
        "attrs": {"type": "string", "description": "Attributes to search by, 'a; b:2' (weights optional)."},
        "filters": {"type": "string", "description": 'Filters as JSON, e.g. {"baseColour": ["Blue"]}.'},
        "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10},
        "offset": {"type": "integer", "minimum": 0, "default": 0},
        "color_weight": {"type": "number", "minimum": 0, "default": 0},
        "text": {"type": "string", "description": "Words combined with the image (composed query)."},
        "mode": {"type": "string", "enum": ["keyword", "vector", "hybrid"]},
        "text_weight": {"type": "number", "minimum": 0, "maximum": 1},
        "positive": {"type": "string", "description": 'More like these item ids, as JSON: ["15970"].'},
        "negative": {"type": "string", "description": 'Less like these item ids, as JSON: ["15970"].'},
    },
}
_SEARCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": SearchRequest.model_json_schema()},
            "multipart/form-data": {"schema": _FORM_SCHEMA},
        },
    }
}


async def run_search(service: Service, make_query: Callable[[dict[str, float], bool], EmbeddedQuery],
                     options: SearchOptions, query_info: dict[str, str]) -> SearchResults:
    """Embed (``make_query(timings, with_attributes)``) and search with the engine in the inference
    pool; timings include the wait for a worker."""
    started = time.perf_counter()
    attrs = service.parse_attrs(options.attrs)
    engine = service.engine

    def work() -> tuple[SearchResponse, dict[str, float]]:
        timings = {"queue": (time.perf_counter() - started) * 1000}
        filters = engine.check_filters(options.filters)
        query = make_query(timings, bool(attrs))
        response = engine.search(query, k=options.k, offset=options.offset, filters=filters, attrs=attrs,
                                 colour_weight=options.color_weight, timings=timings)
        return response, timings

    response, timings = await service.run(work)
    timings["total"] = (time.perf_counter() - started) * 1000
    return SearchResults.build(response, k=options.k, offset=options.offset, query=query_info, timings_ms=timings)


def _decode_base64(text: str) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError("image_base64 is not valid base64") from None


def _form_options(fields: list[tuple[str, str]]) -> tuple[SearchOptions, TextOptions]:
    """Search and text options from multipart text fields (each at most once; filters, positive
    and negative as JSON)."""
    data: dict[str, Any] = {}
    for key, value in fields:
        if key in data:
            raise InvalidRequestError(f"form field {key!r} is given more than once")
        data[key] = value
    if "filters" in data:
        data["filters"] = json_field(data["filters"] or "{}", "filters", '{"baseColour": ["Blue"]}')
    for key in ("positive", "negative"):
        if key in data:
            data[key] = json_field(data[key] or "[]", key, '["15970"]')
    data = form_numbers(data)
    text = {key: data.pop(key) for key in list(data) if key in TextOptions.model_fields}
    return validate(SearchOptions, data), validate(TextOptions, text)


async def run_text_search(service: Service, options: SearchOptions, text: TextOptions, *, image: bytes | None,
                          item_id: str | None) -> SearchResults:
    """Words and/or several examples, composed and answered by the engine (a text query)."""
    started = time.perf_counter()
    engine = service.engine
    if options.attrs:
        raise InvalidRequestError("attrs cannot be combined with text, positive or negative")
    if options.color_weight:
        raise InvalidRequestError("color_weight applies to image search only, not to text queries")
    if image is not None:
        service.check_size(len(image), "the image")

    def work() -> tuple[SearchResponse, dict[str, float], TextQuery]:
        timings = {"queue": (time.perf_counter() - started) * 1000}
        filters = engine.check_filters(options.filters)
        query = engine.text_query(text.text, images=[(1.0, image)] if image is not None else [],
                                  items=([item_id] if item_id is not None else []) + list(text.positive),
                                  negatives=text.negative, mode=text.mode, text_weight=text.text_weight,
                                  timings=timings)
        response = engine.search(query, k=options.k, offset=options.offset, filters=filters, timings=timings)
        return response, timings, query

    response, timings, query = await service.run(work)
    timings["total"] = (time.perf_counter() - started) * 1000
    info = {"type": "text", "mode": query.mode, **({"text": text.text} if text.text is not None else {}),
            **({"understood": query.labels.describe()} if query.labels else {})}
    return SearchResults.build(response, k=options.k, offset=options.offset, query=info, timings_ms=timings)


@router.post("/search", response_model=SearchResults, responses=ERRORS, openapi_extra=_SEARCH_BODY,
             summary="Search by an uploaded image (multipart), a base64 image, an item id, words or examples")
async def search(request: Request, service: ServiceDep) -> SearchResults:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=16) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidRequestError("a multipart search needs the query image in the 'file' field")
            data = await read_upload(upload, service)
            name = upload.filename or "upload"
            options, text = _form_options([(key, value) for key, value in form.multi_items()
                                           if isinstance(value, str)])
        if text.is_text_query:
            return await run_text_search(service, options, text, image=data, item_id=None)
        return await run_search(service, lambda t, a: service.query_from_bytes(data, t, attributes=a, source=name),
                                options, {"type": "image"})
    if content_type not in ("application/json", ""):
        raise UnsupportedMediaTypeError(f"send JSON or multipart/form-data, not {content_type!r}")
    body = validate(SearchRequest, await request.body())
    if body.is_text_query:
        image = _decode_base64(body.image_base64) if body.image_base64 is not None else None
        return await run_text_search(service, body, body, image=image, item_id=body.item_id)
    if body.item_id is not None:
        item_id = body.item_id
        return await run_search(service, lambda _t, a: service.query_from_item(item_id, attributes=a), body,
                                {"type": "item", "item_id": item_id})
    encoded = body.image_base64 or ""
    return await run_search(
        service, lambda t, a: service.query_from_bytes(_decode_base64(encoded), t, attributes=a), body,
        {"type": "image"})


@router.post("/submit", response_model=SubmitResponse, responses=ERRORS,
             summary="RPF-compatible search: an image path under an allowed folder, or an item id")
async def submit(body: SubmitRequest, service: ServiceDep,
                 k: Annotated[int, Query(ge=1, le=MAX_K, description="Number of results.")] = 10) -> SubmitResponse:
    attrs = service.parse_attrs(body.attrs)

    def work() -> SubmitResponse:
        started = time.perf_counter()
        query = service.query_from_img_path(body.img_path, {}, attributes=bool(attrs))
        response = service.engine.search(query, k=k, attrs=attrs)
        return SubmitResponse(ids=[h.id for h in response.hits], similarities=[round(h.score, 6) for h in response.hits],
                              retrieval_times=time.perf_counter() - started)

    return await service.run(work)
