"""A running server and CLI writers on one collection: the server searches what the CLI wrote while
it runs, and its save at shutdown never hides the CLI's newer items from later searches."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import garment_image, jpeg_bytes

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vestis(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "vestis", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def search_ids(collection, image) -> list[str]:
    out = vestis("search", "--collection", str(collection), str(image), "-k", "5", "--json")
    return [hit["id"] for hit in json.loads(out.stdout)["results"]]


def server_search_ids(port: int, image) -> list[str]:
    boundary = "vestisboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + image.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/search", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return [hit["id"] for hit in json.loads(response.read())["results"]]


def test_server_and_cli_writers_interleaved(collection_copy, tmp_path):
    new_folder = tmp_path / "new"
    new_folder.mkdir()
    for name, colour in (("newA", (240, 200, 20)), ("newB", (120, 20, 140))):
        (new_folder / f"{name}.jpg").write_bytes(jpeg_bytes(garment_image(colour, "dress", seed=7)))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "vestis", "serve", "--collection", str(collection_copy), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.5)
        vestis("remove", "red-shirt-0", "--collection", str(collection_copy))
        vestis("index", str(new_folder), "--collection", str(collection_copy))
        assert server_search_ids(port, new_folder / "newA.jpg")[0] == "newA"
        assert "red-shirt-0" not in server_search_ids(port, new_folder / "newA.jpg")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)

    info = json.loads(vestis("info", "--collection", str(collection_copy), "--json").stdout)
    assert info["items"] == 24 - 1 + 2
    assert search_ids(collection_copy, new_folder / "newA.jpg")[0] == "newA"
    assert search_ids(collection_copy, new_folder / "newB.jpg")[0] == "newB"


def test_concurrent_adds_of_one_id_keep_the_winners_image(collection_copy, api_encoder, monkeypatch):
    """Six uploads with the same id that pass their checks together: one is added (201), the others
    answer 409, and the winner's image is still served (a loser must never delete it)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    import vestis.api.service as service_module
    from vestis.api.app import create_app

    uploads = 6
    barrier = threading.Barrier(uploads, timeout=30)
    real_decode = service_module.decode_image

    def decode_together(*args, **kwargs):  # every upload reaches the write at the same moment
        image = real_decode(*args, **kwargs)
        if kwargs.get("source") == "upload":
            barrier.wait()
        return image

    monkeypatch.setattr(service_module, "decode_image", decode_together)
    image = jpeg_bytes(garment_image((240, 120, 10), "dress", seed=11))
    app = create_app(collection_copy, encoder=api_encoder, workers=uploads)
    with TestClient(app) as client, ThreadPoolExecutor(uploads) as pool:
        def add(_):
            return client.post("/items", files={"file": ("r.jpg", image, "image/jpeg")}, data={"id": "race1"})

        statuses = sorted(r.status_code for r in pool.map(add, range(uploads)))
        assert statuses == [201] + [409] * (uploads - 1)
        assert client.get("/items/race1").status_code == 200
        served = client.get("/images/race1")
        assert served.status_code == 200 and served.content == image
    assert sorted(p.name for p in (collection_copy / "uploads").iterdir()) == ["race1.jpg"]


def test_stopping_on_a_full_disk_is_one_warning_and_keeps_every_item(collection_copy, api_encoder, monkeypatch,
                                                                     caplog):
    """Saving the derived files at shutdown fails on a full disk: a warning, not a failed shutdown;
    the item added before is in the collection when it opens again."""
    import errno

    import numpy as np
    from fastapi.testclient import TestClient

    from vestis.api.app import create_app
    from vestis.store.collection import Collection

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    image = jpeg_bytes(garment_image((20, 200, 200), "shirt", seed=5))
    with TestClient(create_app(collection_copy, encoder=api_encoder)) as client:
        assert client.post("/items", files={"file": ("c.jpg", image, "image/jpeg")}, data={"id": "cyan1"}).status_code == 201
        monkeypatch.setattr(np, "save", full)
    monkeypatch.undo()
    assert f"the disk holding {collection_copy} is full" in caplog.text
    assert "every item is saved" in caplog.text
    assert not [p for p in (collection_copy / "cache").iterdir() if p.name.startswith(".")]
    reopened = Collection.open(collection_copy)
    try:
        assert "cyan1" in reopened
    finally:
        reopened.close()
