"""The FastAPI application: routes, error mapping, body limit, metrics, the web page and the docs.

``create_app`` loads the collection and the encoder once (see :class:`~vestis.api.service.Service`);
everything the API refuses is a :class:`~vestis.errors.VestisError` answered with a 4xx status and
``{"detail": message}``; anything unexpected is logged and answered 500, and the server keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from vestis import __version__
from vestis.api.errors import status_of
from vestis.api.limits import BodyLimitMiddleware
from vestis.api.metrics import Metrics, MetricsMiddleware
from vestis.api.routes import items, meta, reindex, search, synonyms
from vestis.api.service import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES, Service
from vestis.encoders.base import ImageEncoder
from vestis.errors import VestisError
from vestis.store.guards import DiskFullError, disk_full_errors

log = logging.getLogger(__name__)

BODY_OVERHEAD = 64 * 1024  # multipart framing and the small fields around an upload

DESCRIPTION = """Search a fashion catalogue by image.

* `POST /search`: upload a photo (multipart `file`), or JSON with `image_base64` or `item_id`;
  `filters`, `k`, `offset`, `color_weight`.
* `POST /submit`: the RPF fashion API: `{"img_path": ..., "attrs": ...}` and `?k=` answer
  `{"ids", "similarities", "retrieval_times"}`.
* `GET /items` pages through the catalogue; `GET /items/{id}`, `/images/{id}` and `/similar/{id}`
  read one item (an id is the whole rest of the path and may hold `/`).
* `POST /items` and `DELETE /items/{id}` change the collection; they need the API key
  (`X-API-Key` or `Authorization: Bearer`) when the server has one. So does `POST /reindex`
  (re-embed every item with another encoder in the background; `GET /reindex` follows it).

The machine-readable spec is `/openapi.json`.
"""


async def _vestis_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, VestisError)
    status = status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error answering %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error (logged on the server)"}, status_code=500)


def create_app(
    collection_dir: Path | str,
    *,
    allow_roots: Sequence[Path | str] | None = None,
    api_key: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    encoder: ImageEncoder | None = None,
    batch: int = 1,
) -> FastAPI:
    """The app serving the collection at ``collection_dir``.

    ``allow_roots``: folders ``POST /submit`` may read images from (default: the folders of the
    collection's catalogues); ``api_key``: required for writes when set (an empty key is refused,
    never taken for none); ``max_upload_bytes`` and
    ``max_pixels``: upload limits (413 and 422 above them); ``workers``: size of the inference
    pool (default: one per core and one more, at most 5); ``encoder``: an already loaded encoder (tests);
    ``batch`` > 1: uploads waiting together share one encoder run of up to ``batch`` images
    (``vestis.encoders.batching``).
    """
    if api_key is not None and not api_key.strip():
        raise VestisError("the API key is empty: give a non-empty key (--api-key or VESTIS_API_KEY), or none "
                          "at all to serve without authentication")
    service = Service(collection_dir, allow_roots=allow_roots, api_key=api_key, max_upload_bytes=max_upload_bytes,
                      max_pixels=max_pixels, workers=workers, encoder=encoder, batch=batch)
    metrics = Metrics(service.item_count, service.batch_stats)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        try:
            with disk_full_errors(service.collection.path, "the next start brings the search files up to date "
                                  "(every item is saved)"):
                service.shutdown()
        except DiskFullError as e:  # the items are all in the database; only the derived files were not saved
            log.warning("%s", e)

    app = FastAPI(title="vestis", version=__version__, description=DESCRIPTION, docs_url=None, redoc_url=None,
                  lifespan=lifespan)
    app.state.service = service
    app.state.metrics = metrics
    app.state.reindex = reindex.ReindexJob()
    app.add_exception_handler(VestisError, _vestis_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_middleware(BodyLimitMiddleware, limit=max_upload_bytes * 4 // 3 + BODY_OVERHEAD)  # base64 JSON
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts 413s from the limit too
    app.include_router(search.router)
    app.include_router(items.router)
    app.include_router(meta.router)
    app.include_router(reindex.router)
    app.include_router(synonyms.router)
    app.mount("/static", StaticFiles(directory=meta.STATIC), name="static")
    app.mount(meta.DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    return app
