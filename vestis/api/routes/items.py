"""Item routes: read an item, its image and its neighbours; add (upload) and delete items."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile

from vestis.api.deps import ServiceDep, read_upload, require_api_key
from vestis.api.errors import InvalidRequestError
from vestis.api.models import Deleted, ItemOut, SearchOptions, SearchResults
from vestis.api.routes.search import ERRORS, run_search
from vestis.search.results import MAX_COLOUR_WEIGHT, MAX_K, MAX_OFFSET

router = APIRouter(prefix="/items", tags=["items"])

# Item ids may contain '/' (catalogue ids made from relative paths), hence the path convertor;
# the routes with a suffix are declared before the plain one.
ItemId = "{item_id:path}"


@router.get(f"/{ItemId}/image", responses={**ERRORS, 200: {"content": {"image/*": {}}, "description": "The image"}},
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


@router.get(f"/{ItemId}/similar", response_model=SearchResults, responses=ERRORS,
            summary="More like this: the items nearest to an indexed item (which is left out)")
async def similar(
    item_id: str, service: ServiceDep,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    color_weight: Annotated[float, Query(ge=0.0, le=MAX_COLOUR_WEIGHT)] = 0.0,
) -> SearchResults:
    options = SearchOptions(k=k, offset=offset, color_weight=color_weight)
    return await run_search(service, lambda _t, a: service.query_from_item(item_id, attributes=a), options,
                            {"type": "item", "item_id": item_id})


@router.get(f"/{ItemId}", response_model=ItemOut, responses=ERRORS, summary="An item's metadata and links")
async def get_item(item_id: str, service: ServiceDep) -> ItemOut:
    item = await service.run(service.get_item, item_id)
    return ItemOut.of(item.id, item.metadata)


@router.post("", response_model=ItemOut, status_code=201, responses={**ERRORS, 401: {"description": "No API key"},
             409: {"description": "The id exists"}}, dependencies=[Depends(require_api_key)],
             summary="Add an item: upload its image with metadata; searchable at once")
async def add_item(
    service: ServiceDep,
    file: Annotated[UploadFile, File(description="The item's image.")],
    metadata: Annotated[str, Form(description='Labels as a JSON object, e.g. {"baseColour": "Blue"}.')] = "{}",
    id: Annotated[str | None, Form(description="The item id (generated when absent).")] = None,
) -> ItemOut:
    data = await read_upload(file, service)
    try:
        labels = json.loads(metadata)
    except json.JSONDecodeError:
        raise InvalidRequestError('metadata must be a JSON object, e.g. {"baseColour": "Blue"}') from None
    item = await service.run(service.add_item, data, id or None, labels)
    return ItemOut.of(item.id, item.metadata)


@router.delete(f"/{ItemId}", response_model=Deleted, dependencies=[Depends(require_api_key)],
               responses={**ERRORS, 401: {"description": "No API key"}}, summary="Remove an item")
async def delete_item(item_id: str, service: ServiceDep) -> Deleted:
    await service.run(service.remove_item, item_id)
    return Deleted(id=item_id, removed=True)
