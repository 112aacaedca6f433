"""A real ``vestis serve`` under every kind of query at once, while the API and the CLI write.

Eight clients send image, item, word (each mode), composed, attribute and browse requests to a
server of two inference workers, while one client adds and deletes items through the API and
``vestis index`` / ``vestis remove`` write to the same collection from other processes. Every
request must be answered within a deadline (a deadlock fails the test instead of hanging it),
with a status that its request deserves; then SIGTERM must stop the server. A second test stops
a server by SIGTERM while one of its requests is stuck for good.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.api.conftest import COLOURS, SHAPES, add_joint_model
from tests.api.test_api_writers import free_port
from tests.conftest import garment_image, jpeg_bytes

pytestmark = pytest.mark.slow

KEY = "mixed-load-key"
CLIENTS, ROUNDS = 8, 3
REQUEST_TIMEOUT = 90.0  # seconds: generous on a busy 2-core machine; a deadlocked request never answers
STOP_TIMEOUT = 45.0


def vestis(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "vestis", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def wait_until_up(server: subprocess.Popen, port: int, deadline_s: float = 180) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert server.poll() is None, server.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.5)


def stop(server: subprocess.Popen) -> float:
    """SIGTERM the server; the seconds it took to exit (fails the test if it does not)."""
    t0 = time.monotonic()
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
        pytest.fail(f"SIGTERM did not stop the server within {STOP_TIMEOUT:.0f} s")
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def rich_collection(collection_copy, api_encoder, tmp_path_factory) -> Path:
    """The shop with a joint text-image model (untrained heads: the plumbing is under test) and an
    attribute model trained for a few epochs on its colour and kind labels."""
    add_joint_model(collection_copy, api_encoder, tmp_path_factory.mktemp("joint"))
    run = tmp_path_factory.mktemp("attr-run")
    config = {
        "kind": "attributes", "name": "shop-attributes", "output": str(run / "run"),
        "data": {"collection": str(collection_copy), "labels": ["colour", "kind"],
                 "split_fractions": [0.5, 0.25, 0.25], "feature_cache": str(run / "features")},
        "model": {"attributes": ["colour", "kind"], "attribute_dim": 8, "hidden": 16, "dropout": 0.0,
                  "global_branch": False},
        "head": {"kind": "triplet", "dim": 8, "miner": "none", "m_per_class": 2},
        "train": {"epochs": 2, "batch_size": 12, "lr": 1e-2, "patience": 0, "progress": False},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    vestis("train", "--config", str(run / "config.yaml"), timeout=900)
    vestis("attributes", "build", "--collection", str(collection_copy), "--model", str(run / "run" / "model.onnx"))
    return collection_copy


def test_every_query_kind_at_once_with_api_and_cli_writers(rich_collection, tmp_path):
    images = {f"{c}-{s}": jpeg_bytes(garment_image(rgb, s, seed=3)) for c, rgb in COLOURS.items() for s in SHAPES}
    b64 = {name: base64.b64encode(data).decode() for name, data in images.items()}
    # (what, method, path, request arguments, statuses it may answer); items queried here are never removed
    kinds = [
        ("image", "POST", "/search", {"files": {"file": ("q.jpg", images["red-shirt"], "image/jpeg")},
                                      "data": {"k": "5"}}),
        ("item", "POST", "/search", {"json": {"item_id": "blue-dress-1", "k": 5}}),
        ("similar", "GET", "/similar/green-trousers-0", {}),
        ("keyword", "POST", "/search", {"json": {"text": "red dress", "mode": "keyword", "k": 10}}),
        ("vector", "POST", "/search", {"json": {"text": "red dress", "mode": "vector", "k": 10}}),
        ("hybrid", "POST", "/search", {"json": {"text": "red dress", "k": 10}}),
        ("hybrid-filtered", "POST", "/search", {"json": {"text": "black shirt", "k": 5,
                                                         "filters": {"kind": ["shirt"]}}}),
        ("composed", "POST", "/search", {"json": {"image_base64": b64["blue-shirt"], "text": "in green",
                                                  "k": 5}}),
        ("examples", "POST", "/search", {"json": {"positive": ["2:red-dress-0", "blue-dress-0"],
                                                  "negative": ["black-shirt-1"], "k": 5}}),
        ("attributes", "POST", "/search", {"json": {"image_base64": b64["green-dress"], "attrs": "colour", "k": 5}}),
        ("browse", "GET", "/items", {"params": {"offset": 0, "limit": 20}}),
        ("health", "GET", "/healthz", {}),
    ]
    new_folder = tmp_path / "arrivals"
    new_folder.mkdir()
    for n, rgb in enumerate(((240, 200, 20), (120, 20, 140), (20, 200, 200))):
        (new_folder / f"arrival-{n}.jpg").write_bytes(jpeg_bytes(garment_image(rgb, SHAPES[n], seed=11)))

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "vestis", "serve", "--collection", str(rich_collection), "--port", str(port),
         "--workers", "2", "--api-key", KEY], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    failures: list[str] = []
    answered: dict[str, int] = {}
    try:
        wait_until_up(server, port)
        base = f"http://127.0.0.1:{port}"

        def client(c: int) -> None:
            with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT) as http:
                for r in range(ROUNDS):
                    for j in range(len(kinds)):
                        what, method, path, kwargs = kinds[(c + j + r) % len(kinds)]
                        try:
                            response = http.request(method, path, **kwargs)
                        except httpx.TimeoutException:
                            failures.append(f"{what}: no answer within {REQUEST_TIMEOUT:.0f} s (deadlock?)")
                            return
                        if response.status_code != 200:
                            failures.append(f"{what}: {response.status_code} {response.text[:300]}")
                        answered[what] = answered.get(what, 0) + 1

        def api_writer() -> None:
            with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT, headers={"X-API-Key": KEY}) as http:
                for n in range(3):
                    item_id = f"api-added-{n}"
                    data = jpeg_bytes(garment_image((30 + 70 * n, 90, 200 - 60 * n), SHAPES[n], seed=20 + n))
                    try:
                        added = http.post("/items", files={"file": (f"{item_id}.jpg", data, "image/jpeg")},
                                          data={"id": item_id, "metadata": json.dumps({"colour": "mixed",
                                                                                      "kind": SHAPES[n]})})
                        if added.status_code != 201:
                            failures.append(f"POST /items: {added.status_code} {added.text[:300]}")
                        if n == 1:
                            deleted = http.delete(f"/items/{item_id}")
                            if deleted.status_code != 200:
                                failures.append(f"DELETE /items: {deleted.status_code} {deleted.text[:300]}")
                    except httpx.TimeoutException:
                        failures.append(f"API write: no answer within {REQUEST_TIMEOUT:.0f} s (deadlock?)")
                        return

        def cli_writer() -> None:
            try:
                vestis("index", str(new_folder), "--collection", str(rich_collection))
                vestis("remove", "red-trousers-1", "--collection", str(rich_collection))
            except (AssertionError, subprocess.TimeoutExpired) as error:
                failures.append(f"CLI write: {error}")

        threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
        threads += [threading.Thread(target=api_writer), threading.Thread(target=cli_writer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=900)
        assert not any(t.is_alive() for t in threads), "a client never finished"
        assert not failures, failures[:8]
        assert set(answered) == {k[0] for k in kinds}
        # the server still answers, and holds what the writers left
        with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT) as http:
            health = http.get("/healthz").json()
            assert health["items"] == 24 + 3 + 2 - 1  # + CLI arrivals + API adds (one deleted) - CLI removal
            top = http.post("/search", json={"item_id": "arrival-0", "k": 1})
            assert top.status_code == 200 and top.json()["results"], top.text
            assert http.get("/items/red-trousers-1").status_code == 404
            words = http.post("/search", json={"text": "mixed", "mode": "keyword", "k": 10}).json()
            assert {"api-added-0", "api-added-2"} <= {h["id"] for h in words["results"]}
    finally:
        if server.poll() is None:
            seconds = stop(server)
            assert seconds < STOP_TIMEOUT
    assert "Traceback" not in server.stderr.read()


STUCK_SERVER = """
import sys, threading
from vestis.search import engine

def stuck(self, *args, **kwargs):
    print("stuck", flush=True)
    threading.Event().wait()  # a request that never ends

engine.Engine.search = stuck
from vestis.api.server import serve
serve(sys.argv[1], port=int(sys.argv[2]), workers=2)
"""


def test_sigterm_stops_a_server_with_a_stuck_request(collection_copy, tmp_path):
    port = free_port()
    script = tmp_path / "stuck_server.py"
    script.write_text(STUCK_SERVER)
    server = subprocess.Popen([sys.executable, str(script), str(collection_copy), str(port)],
                              cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_up(server, port)
        hung = threading.Thread(target=lambda: _ignore_errors(
            lambda: httpx.post(f"http://127.0.0.1:{port}/search", json={"item_id": "red-shirt-0"}, timeout=120)))
        hung.start()
        assert server.stdout.readline().strip() == "stuck"  # the request is inside the engine now
    finally:
        seconds = stop(server)
    err = server.stderr.read()
    assert "still running" in err, err[-2000:]  # it says why it did not wait for the request
    assert seconds < STOP_TIMEOUT
    hung.join(timeout=30)


def _ignore_errors(fn) -> None:
    try:
        fn()
    except httpx.HTTPError:
        pass

