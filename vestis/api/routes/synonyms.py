"""``/synonyms``: the collection's own words for word search, added to the shipped vocabulary."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, UploadFile

from vestis.api.deps import ServiceDep, read_upload, require_api_key
from vestis.api.models import Synonyms
from vestis.api.routes.search import ERRORS
from vestis.data.vocabulary import parse
from vestis.store.keyword_index import own_synonyms, save_synonyms

router = APIRouter(tags=["synonyms"])


def _stored(service) -> Synonyms:  # noqa: ANN001 - the API's Service
    text = own_synonyms(service.collection)
    return Synonyms(text=text, entries=len(parse(text.encode(), "synonyms")))


@router.get("/synonyms", response_model=Synonyms, responses=ERRORS,
            summary="The collection's own synonyms (Solr format), as stored")
async def get_synonyms(service: ServiceDep) -> Synonyms:
    return await service.run(_stored, service)


@router.put("/synonyms", response_model=Synonyms, dependencies=[Depends(require_api_key)],
            responses={**ERRORS, 401: {"description": "No API key"}},
            summary="Replace the collection's own synonyms: 'tee, tshirt' (two-way) or 'kicks => sneakers' "
                    "(one-way); a bad file (a cycle, an empty word, a long line, bytes not UTF-8) is refused "
                    "whole (422) and the stored one kept")
async def put_synonyms(service: ServiceDep,
                       file: Annotated[UploadFile, File(description="The synonyms file.")]) -> Synonyms:
    data = await read_upload(file, service)
    await service.run(save_synonyms, service.collection, data, file.filename or "upload")
    return await service.run(_stored, service)
