"""Item routes: browse the catalogue, read an item, its image and its neighbours; add and delete items.

Item ids may contain any character, '/' included (catalogue ids made from relative paths), so each
route that takes an id has a prefix of its own and the id is the whole rest of the path
(``/items/{id}``, ``/images/{id}``, ``/similar/{id}``): no id can be mistaken for another route.
The older ``/items/{id}/image`` and ``/items/{id}/similar`` still answer, with a redirect, when no
item has the whole path as its id.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import RedirectResponse

from vestis.api.deps import ServiceDep, json_field, read_upload, require_api_key
from vestis.api.models import (
    MAX_BROWSE_OFFSET,
    MAX_PAGE,
    Deleted,
    DuplicateGroupOut,
    DuplicatePair,
    Duplicates,
    ItemOut,
    ItemPage,
    SearchResults,
)
from vestis.api.routes.search import ERRORS, run_search
from vestis.errors import NotFoundError
from vestis.search.duplicates import DEFAULT_THRESHOLD
from vestis.search.query import SearchQuery
from vestis.search.results import MAX_COLOUR_WEIGHT, MAX_K, MAX_OFFSET

router = APIRouter(tags=["items"])

_LEGACY_SUFFIXES = {"/image": "/images/", "/similar": "/similar/"}


@router.get("/items", response_model=ItemPage, responses=ERRORS,
            summary="Browse the catalogue: a page of items in the order they were added")
async def list_items(
    service: ServiceDep,
    offset: Annotated[int, Query(ge=0, le=MAX_BROWSE_OFFSET, description="Items to skip.")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Items per page.")] = 24,
) -> ItemPage:
    total, items = await service.run(service.list_items, offset, limit)
    return ItemPage(items=[ItemOut.of(it.id, it.metadata) for it in items], total=total, offset=offset, limit=limit)


@router.get("/images/{item_id:path}",
            responses={**ERRORS, 200: {"content": {"image/*": {}}, "description": "The image"}},
            response_class=Response, summary="The item's image (or a JPEG thumbnail with ?size=)")
async def item_image(
    item_id: str, request: Request, service: ServiceDep,
    size: Annotated[int | None, Query(ge=16, le=1024, description="Fit into size x size (JPEG).")] = None,
) -> Response:
    item = await service.run(service.get_item, item_id)
    etag = f'"{item.hash[:32]}-{size or 0}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    data, mime = await service.run(service.item_image, item, size)
    return Response(data, media_type=mime, headers=headers)


@router.get("/similar/{item_id:path}", response_model=SearchResults, responses=ERRORS,
            summary="More like this: the items nearest to an indexed item (which is left out)")
async def similar(
    item_id: str, service: ServiceDep,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    color_weight: Annotated[float, Query(ge=0.0, le=MAX_COLOUR_WEIGHT, allow_inf_nan=False)] = 0.0,
) -> SearchResults:
    return await run_search(service, SearchQuery(item_id=item_id, k=k, offset=offset, color_weight=color_weight))


@router.get("/duplicates", response_model=Duplicates, responses=ERRORS,
            summary="Near-duplicate listings: groups of items that duplicate each other, largest first")
async def duplicates(
    service: ServiceDep,
    threshold: Annotated[float, Query(ge=0.5, le=1.0, allow_inf_nan=False,
                                      description="Similarity from which two items are duplicates.")]
    = DEFAULT_THRESHOLD,
    offset: Annotated[int, Query(ge=0, le=MAX_BROWSE_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> Duplicates:
    report = await service.run(service.duplicates, threshold)
    page = report.groups[offset:offset + limit]
    return Duplicates(threshold=report.threshold, items=report.items, groups=len(report.groups), offset=offset,
                      duplicates=[DuplicateGroupOut(ids=g.ids, pairs=[DuplicatePair(a=a, b=b, score=round(x, 6))
                                                                      for a, b, x in g.pairs]) for g in page],
                      seconds=round(report.seconds, 3))


@router.get("/items/{item_id:path}", response_model=ItemOut,
            responses={**ERRORS, 308: {"description": "Old-style /items/{id}/image or /items/{id}/similar of an "
                                       "item {id}: redirects to /images/{id} or /similar/{id}"}},
            summary="An item's metadata and links (the id is the whole rest of the path)")
async def get_item(item_id: str, request: Request, service: ServiceDep) -> ItemOut | RedirectResponse:
    try:
        item = await service.run(service.get_item, item_id)
    except NotFoundError:
        target = _legacy_target(item_id)
        if target is None or not await service.run(service.has_item, target[1]):
            raise
        url = target[0] + quote(target[1], safe="") + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(url, status_code=308)
    return ItemOut.of(item.id, item.metadata)


def _legacy_target(path: str) -> tuple[str, str] | None:
    """(new route prefix, item id) of an old-style sub-resource path, or None."""
    for suffix, prefix in _LEGACY_SUFFIXES.items():
        if path.endswith(suffix) and len(path) > len(suffix):
            return prefix, path[: -len(suffix)]
    return None


@router.post("/items", response_model=ItemOut, status_code=201,
             responses={**ERRORS, 401: {"description": "No API key"}, 409: {"description": "The id exists"},
                        507: {"description": "The server's disk is full"}},
             dependencies=[Depends(require_api_key)],
             summary="Add an item: upload its image with metadata; searchable at once")
async def add_item(
    service: ServiceDep,
    file: Annotated[UploadFile, File(description="The item's image.")],
    metadata: Annotated[str, Form(description='Labels as a JSON object, e.g. {"baseColour": "Blue"}.')] = "{}",
    id: Annotated[str | None, Form(description="The item id (generated when absent).")] = None,
) -> ItemOut:
    data = await read_upload(file, service)
    labels = json_field(metadata, "metadata", '{"baseColour": "Blue"}', "a JSON object")
    item = await service.run(service.add_item, data, id or None, labels)
    return ItemOut.of(item.id, item.metadata)


@router.delete("/items/{item_id:path}", response_model=Deleted, dependencies=[Depends(require_api_key)],
               responses={**ERRORS, 401: {"description": "No API key"}},
               summary="Remove an item (the id is the whole rest of the path)")
async def delete_item(item_id: str, service: ServiceDep) -> Deleted:
    await service.run(service.remove_item, item_id)
    return Deleted(id=item_id, removed=True)
