"""`vestis serve`: the HTTP API and the web page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vestis.cli.common import CollectionOpt, app, fail


@app.command("serve")
def serve_cmd(
    collection: CollectionOpt,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int | None, typer.Option(help="Inference threads (default: one per core and one more, at most 5).")] = None,
    allow_root: Annotated[
        list[Path] | None, typer.Option("--allow-root", help="Folder /submit may read img_path from (repeatable).")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="VESTIS_API_KEY", help="Key required for POST/DELETE /items.")
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted upload, in MiB.")] = 20.0,
    batch: Annotated[int, typer.Option(
        help="Uploads waiting together share one encoder run of up to this many images (1: off).")] = 1,
) -> None:
    """Serve the HTTP API (RPF-compatible POST /submit, /search, /items) and the web page at /."""
    import os

    from vestis.api.server import serve

    if api_key is None and os.environ.get("VESTIS_API_KEY") == "":  # click reads an empty variable as unset
        fail("VESTIS_API_KEY is set but empty: set it to a key, or unset it to serve without authentication")

    serve(
        collection, host=host, port=port, workers=workers, allow_roots=allow_root or None, api_key=api_key,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024), batch=batch,
    )

