"""``vestis serve``: run the API and the web page with uvicorn (one process; inference in a thread pool)."""

from __future__ import annotations

import gc
import ipaddress
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from vestis.api.app import create_app
from vestis.api.service import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES

log = logging.getLogger(__name__)

GRACE_S = 10  # seconds the requests in progress get to finish after SIGTERM


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(
    collection: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int | None = None,
    allow_roots: Sequence[Path | str] | None = None,
    api_key: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    log_level: str = "info",
    access_log: bool = False,
    batch: int = 1,
) -> None:
    """Load the collection and the model, print the URL, and serve until interrupted.

    ``workers`` sizes the inference thread pool (not uvicorn processes: the collection lives in
    this process's memory, so adds are seen by every query at once)."""
    started = time.perf_counter()
    app = create_app(collection, allow_roots=allow_roots, api_key=api_key, max_upload_bytes=max_upload_bytes,
                     max_pixels=max_pixels, workers=workers, batch=batch)
    service = app.state.service
    if api_key is None and not _is_loopback(host):
        log.warning("serving on %s without an API key: anyone who can reach it may add and delete items", host)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    roots = ", ".join(map(str, service.roots)) or "none"
    print(f"vestis: {service.item_count():,} items from {collection} ready in {time.perf_counter() - started:.1f}s "
          f"({service.workers} inference workers); img_path roots: {roots}\n"
          f"vestis: open {url} (API docs: {url}docs)", file=sys.stderr, flush=True)
    # Everything loaded so far (modules, the model, the collection's tables) lives as long as the
    # process: kept out of the collector's full passes, which otherwise walk it all while every
    # request waits (about 50-250 ms a pass on the 2-core machine: a tail-latency spike).
    gc.collect()
    gc.freeze()
    # Requests beyond limit_concurrency get 503 at once instead of queueing (each may hold an upload).
    # On SIGTERM or Ctrl-C, requests in progress get GRACE_S to finish; uvicorn then ends the process
    # with the signal it caught.
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log,
                    limit_concurrency=max(64, 16 * service.workers), timeout_graceful_shutdown=GRACE_S)
    except KeyboardInterrupt:
        if service.busy():  # the pool's threads are joined at exit: a stuck request would hold it for ever
            os._exit(130)
        raise
