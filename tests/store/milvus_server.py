"""A real Milvus server for the tests: the embedded standalone of the PyPI package ``milvus``
(Milvus 2.3, with its own etcd and local storage), started once per test session and stopped at
its end.

It is older than multi-vector collections, so the store keeps one vector field per Milvus
collection there (the ``split`` layout). Starting takes about 10-30 s on the 2-core machine and
longer under load: the fixture waits up to START_TIMEOUT_S and tries once more before failing.
The tests are skipped only when the ``milvus`` package is not installed.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT_S = 180
ATTEMPTS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(base: Path):
    """A started Milvus standalone with its data under ``base`` (a second try after a failed start)."""
    milvus = pytest.importorskip("milvus", reason="the real Milvus server tests need the `milvus` package "
                                                  "(pip install 'vestis[milvus]')")
    error: Exception | None = None
    for attempt in range(ATTEMPTS):
        server = milvus.MilvusServer(wait_for_started=False)
        server.set_base_dir(str(base / f"attempt-{attempt}"))
        for key in server.config_keys:  # free ports: several test sessions may run at once
            if key.endswith("_port"):
                server.config.set(key, _free_port())
        try:
            server.start()
            server.wait_started(timeout=START_TIMEOUT_S * 1000)
            if server.running:
                return server
            error = RuntimeError("the server process ended while starting")
        except Exception as e:  # noqa: BLE001 - any failed start is retried once
            error = e
        server.stop()
    raise RuntimeError(f"the Milvus server did not start in {ATTEMPTS} tries: {error}")


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory) -> Iterator[str]:
    """``milvus://127.0.0.1:PORT/`` of a running server; side files go to a session folder."""
    base = tmp_path_factory.mktemp("milvus-server")
    server = start_server(base)
    previous = os.environ.get("VESTIS_MILVUS_FILES")
    os.environ["VESTIS_MILVUS_FILES"] = str(base / "files")  # children (killed indexers) inherit it
    try:
        yield f"milvus://127.0.0.1:{server.listen_port}/"
    finally:
        if previous is None:
            os.environ.pop("VESTIS_MILVUS_FILES", None)
        else:
            os.environ["VESTIS_MILVUS_FILES"] = previous
        server.stop()
