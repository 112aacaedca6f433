"""Re-embedding from the API: ``POST /reindex`` starts ``vestis reindex`` in a background thread of
the server (one at a time; it needs the API key), ``GET /reindex`` reports its progress. Searches
keep answering from the old vectors throughout and follow the switch (``/api/info`` then names the
new encoder)."""

from __future__ import annotations

import logging
import threading
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from vestis.api.deps import ServiceDep, require_api_key
from vestis.api.errors import BadRequestError, ConflictError
from vestis.api.routes.search import ERRORS
from vestis.api.service import Service
from vestis.encoders import get_encoder, list_encoders
from vestis.errors import VestisError
from vestis.locks import leaf_lock
from vestis.store import reindex as reindexing
from vestis.store.factory import open_collection

log = logging.getLogger(__name__)
router = APIRouter(tags=["collection"])


class ReindexRequest(BaseModel):
    encoder: str | None = Field(None, description="The new encoder: a built-in name, or the path of an .onnx "
                                "model under the server's allowed folders (--allow-root).")
    rollback: bool = Field(False, description="Switch back to the vectors a reindex with keep_old kept.")
    keep_old: bool = Field(False, description="Keep the old vectors for a rollback.")


class ReindexStatus(BaseModel):
    state: Literal["idle", "running", "done", "failed"]
    encoder: str | None = None
    done: int = Field(0, description="Items with their new vector.")
    total: int = Field(0, description="Items to have one before the switch.")
    error: str | None = None
    report: dict[str, Any] | None = None


class ReindexJob:
    """The server's one re-embedding: it runs on a collection handle of its own, so this server's
    searches see it as another process's work and follow the switch like any reader."""

    def __init__(self) -> None:
        self._lock = leaf_lock("reindex job")
        self.status = ReindexStatus(state="idle")

    def snapshot(self) -> ReindexStatus:
        with self._lock:
            return self.status.model_copy()

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self.status = self.status.model_copy(update=changes)

    def start(self, service: Service, request: ReindexRequest) -> ReindexStatus:
        if request.rollback == (request.encoder is not None):
            raise BadRequestError("give either an encoder or rollback: true")
        encoder = None
        if request.encoder is not None:
            source = request.encoder
            if source not in list_encoders():
                if not source.lower().endswith(".onnx"):
                    raise BadRequestError(f"unknown encoder {source!r}; use one of {', '.join(list_encoders())} "
                                          "or an .onnx model under the server's allowed folders")
                source = str(service.resolve_image_path(source))
            encoder = get_encoder(source)
            if encoder.version == service.collection.encoder_version:
                raise ConflictError(f"the collection is already embedded by {encoder.version}: nothing to re-embed")
        elif service.collection.previous_encoder() is None:
            raise ConflictError("the collection kept no earlier vectors to roll back to (reindex with keep_old)")
        crop = service.engine.crop()
        with self._lock:
            if self.status.state == "running":
                raise ConflictError("a reindex is running already: follow it with GET /reindex")
            name = encoder.version if encoder is not None else "rollback"
            self.status = ReindexStatus(state="running", encoder=name)
        location = service.collection.location
        thread = threading.Thread(target=self._run, args=(location, encoder, request, crop), daemon=True,
                                  name="vestis-reindex")
        thread.start()
        return self.snapshot()

    def _run(self, location: Any, encoder: Any, request: ReindexRequest, crop: Any) -> None:
        def progress(done: int, total: int) -> None:
            self._update(done=done, total=total)

        try:
            with open_collection(location) as collection:
                if encoder is None:
                    report = reindexing.rollback(collection, keep_old=request.keep_old, progress=False,
                                                 transform=crop, on_progress=progress)
                else:
                    report = reindexing.reindex(collection, encoder, keep_old=request.keep_old, progress=False,
                                                transform=crop, on_progress=progress)
            self._update(state="done", encoder=report.encoder, report=report.as_dict())
        except VestisError as error:
            self._update(state="failed", error=str(error))
        except Exception:
            log.exception("reindex of %s failed", location)
            self._update(state="failed", error="internal error (logged on the server)")


def _job(request: Request) -> ReindexJob:
    return request.app.state.reindex  # one per app (create_app)


@router.post("/reindex", response_model=ReindexStatus, status_code=202, dependencies=[Depends(require_api_key)],
             responses={**ERRORS, 401: {"description": "No API key"},
                        409: {"description": "The encoder in use, nothing to roll back to, or a reindex running"}},
             summary="Re-embed every item with another encoder in the background, then switch")
async def start_reindex(body: ReindexRequest, request: Request, service: ServiceDep) -> ReindexStatus:
    job = _job(request)
    return await service.run(job.start, service, body)


@router.get("/reindex", response_model=ReindexStatus, summary="The progress of the server's reindex")
async def reindex_status(request: Request) -> ReindexStatus:
    return _job(request).snapshot()
