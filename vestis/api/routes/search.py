"""Search routes: ``POST /search`` (upload, base64 or item id) and the RPF-compatible ``POST /submit``."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile

from vestis.api.deps import ServiceDep, json_field, read_upload, validate
from vestis.api.errors import InvalidRequestError, UnsupportedMediaTypeError
from vestis.api.models import SearchRequest, SearchResults, SubmitRequest, SubmitResponse, form_numbers
from vestis.api.service import Service
from vestis.search.engine import SearchOutcome
from vestis.search.query import SearchQuery
from vestis.search.results import MAX_K

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
        "region": {"type": "string", "enum": ["auto", "none", "top", "bottom", "shoes", "person"]},
        "region_scope": {"type": "boolean", "default": True},
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


async def run_search(service: Service, query: SearchQuery) -> SearchResults:
    """Answer a query with the engine in the inference pool; timings include the wait for a worker."""
    started = time.perf_counter()

    def work() -> tuple[SearchOutcome, dict[str, float]]:
        timings = {"queue": (time.perf_counter() - started) * 1000}
        return service.search(query, timings), timings

    outcome, timings = await service.run(work)
    timings["total"] = (time.perf_counter() - started) * 1000
    return SearchResults.build(outcome, k=query.k, offset=query.offset, timings_ms=timings)


def _form_request(fields: list[tuple[str, str]]) -> SearchRequest:
    """The search request of multipart text fields (each at most once; filters, positive and
    negative as JSON)."""
    data: dict[str, Any] = {}
    for key, value in fields:
        if key in data:
            raise InvalidRequestError(f"form field {key!r} is given more than once")
        data[key] = value
    if "image_base64" in data:
        raise InvalidRequestError("a multipart search sends its image in the 'file' field, not image_base64")
    if "filters" in data:
        data["filters"] = json_field(data["filters"] or "{}", "filters", '{"baseColour": ["Blue"]}')
    for key in ("positive", "negative"):
        if key in data:
            data[key] = json_field(data[key] or "[]", key, '["15970"]')
    return validate(SearchRequest, form_numbers(data))


@router.post("/search", response_model=SearchResults, responses=ERRORS, openapi_extra=_SEARCH_BODY,
             summary="Search by an uploaded image (multipart), a base64 image, an item id, words or examples")
async def search(request: Request, service: ServiceDep) -> SearchResults:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=20) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidRequestError("a multipart search needs the query image in the 'file' field")
            data = await read_upload(upload, service)
            name = upload.filename or "upload"
            body = _form_request([(key, value) for key, value in form.multi_items() if isinstance(value, str)])
        return await run_search(service, body.to_query(image=data, image_name=name))
    if content_type not in ("application/json", ""):
        raise UnsupportedMediaTypeError(f"send JSON or multipart/form-data, not {content_type!r}")
    return await run_search(service, validate(SearchRequest, await request.body()).to_query())


@router.post("/submit", response_model=SubmitResponse, responses=ERRORS,
             summary="RPF-compatible search: an image path under an allowed folder, or an item id")
async def submit(body: SubmitRequest, service: ServiceDep,
                 k: Annotated[int, Query(ge=1, le=MAX_K, description="Number of results.")] = 10) -> SubmitResponse:
    def work() -> SubmitResponse:
        started = time.perf_counter()
        outcome = service.search(service.img_path_query(body.img_path, attrs=body.attrs, k=k), {})
        hits = outcome.response.hits
        return SubmitResponse(ids=[h.id for h in hits], similarities=[round(h.score, 6) for h in hits],
                              retrieval_times=time.perf_counter() - started)

    return await service.run(work)
