"""Service routes: the web page, health, metrics, collection info and the offline API docs."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from vestis.api.deps import ServiceDep
from vestis.api.metrics import CONTENT_TYPE
from vestis.api.models import Column, ColumnValue, Health, Info
from vestis.search.engine import COLUMN_VALUES
from vestis.search.results import MAX_K

STATIC = Path(__file__).resolve().parents[1] / "static"
DOCS_ASSETS = "/docs-assets"

router = APIRouter(tags=["service"])


@router.get("/", include_in_schema=False)
async def index_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    """The icon, also where browsers look for it without reading the page's <link rel="icon">."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


@router.get("/healthz", response_model=Health, summary="Liveness and collection size")
async def healthz(service: ServiceDep) -> Health:
    items = await service.run(service.item_count)
    return Health(status="ok", items=items, uptime_s=round(time.time() - service.started_at, 3),
                  startup_s=round(service.startup_seconds, 3))


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (text format)",
            responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text"}})
async def metrics(request: Request, service: ServiceDep) -> Response:
    body = await service.run(request.app.state.metrics.render)
    return Response(body, media_type=CONTENT_TYPE)


@router.get("/api/info", response_model=Info, summary="The collection, its metadata columns and limits")
async def info(service: ServiceDep) -> Info:
    coll = service.collection
    await service.run(coll.refresh)  # the encoder another process re-embedded it with (vestis reindex)
    columns = await service.run(service.metadata_columns)
    return Info(
        name=coll.path.name, items=await service.run(service.item_count), encoder=coll.encoder_name,
        encoder_version=coll.encoder_version, dim=coll.dim, index=coll.active_index_spec,
        index_setting=coll.index_spec, generation=coll.generation,
        colour=bool(coll.colour_dim), attributes=service.attribute_names(),
        columns=[Column(name=name, values=[ColumnValue(value=v, count=c) for v, c in values],
                        filterable=len(values) < COLUMN_VALUES and bool(values) and values[0][1] > 1)
                 for name, values in columns.items()],
        max_k=MAX_K, max_upload_bytes=service.max_upload_bytes, max_pixels=service.max_pixels,
        writes_need_api_key=service.api_key is not None,
    )


@router.get("/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    """Swagger UI served from the installed swagger-ui bundle (FastAPI's default page loads a CDN)."""
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url, title=f"{request.app.title} API",
        swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
    )
