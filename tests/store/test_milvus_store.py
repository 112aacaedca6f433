"""What only the Milvus store has: locations, credentials, filter expressions, and its failures."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from vestis.errors import VestisError
from vestis.store.collection import NewItem
from vestis.store.location import milvus_credentials, parse_location

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")
from pymilvus import MilvusException  # noqa: E402

from vestis.store.factory import create_collection, open_collection  # noqa: E402
from vestis.store.milvus import filter_expression, literal, parse_index_spec  # noqa: E402


def test_locations(tmp_path, monkeypatch):
    local = parse_location(tmp_path / "c")
    assert local.kind == "local" and not local.is_milvus
    lite = parse_location(f"milvus-lite:{tmp_path}/shop.db")
    assert (lite.kind, lite.uri, lite.files) == ("milvus-lite", f"{tmp_path}/shop.db", tmp_path / "shop.db.files")
    monkeypatch.setenv("VESTIS_MILVUS_FILES", str(tmp_path / "side"))
    for text in ("milvus://db.example:19530/shop", "milvus:/db.example:19530/shop"):  # the second: as Path() writes it
        server = parse_location(text)
        assert (server.uri, server.name, server.text) == ("http://db.example:19530", "shop",
                                                         "milvus://db.example:19530/shop")
        assert server.files == tmp_path / "side" / "shop"
    assert parse_location("milvus+https://db:443/shop").uri == "https://db:443"
    for bad, message in (("milvus://db/shop", "HOST:PORT"), ("milvus://db:1/bad-name", "letters"),
                         ("milvus-lite:", "needs a file")):
        with pytest.raises(VestisError, match=message):
            parse_location(bad)


def test_credentials_come_from_the_environment(monkeypatch):
    for name in ("MILVUS_TOKEN", "MILVUS_USER", "MILVUS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    assert milvus_credentials() == {}
    monkeypatch.setenv("MILVUS_USER", "shop")
    monkeypatch.setenv("MILVUS_PASSWORD", "s3cret")
    assert milvus_credentials() == {"user": "shop", "password": "s3cret"}
    monkeypatch.setenv("MILVUS_TOKEN", "shop:s3cret")
    assert milvus_credentials() == {"token": "shop:s3cret"}


def test_filter_expressions_escape_values():
    assert literal('Navy "Blue" \\ x\ny') == '"Navy \\"Blue\\" \\\\ x\\ny"'
    assert filter_expression({"colour": ["Blue", 'Na"vy'], "kind": "shirt"}, exclude=[7]) == (
        '(labels["colour"] == "Blue" or labels["colour"] == "Na\\"vy") and (labels["kind"] == "shirt")'
        " and vid not in [7]")
    assert filter_expression({"colour": []}) == ""
    with pytest.raises(VestisError, match="control character"):
        literal("a\x00b")
    assert parse_index_spec("hnsw:M=16,ef=128") == ("HNSW", {"M": 16, "efConstruction": 200, "ef": 128})
    with pytest.raises(VestisError, match="bad"):
        parse_index_spec("ivfpq")


def items(start: int, n: int) -> list[NewItem]:
    rng = np.random.default_rng(start)
    vectors = rng.normal(size=(n, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [NewItem(f"i{start + k}", f"/x/{start + k}.jpg", "h", vectors[k]) for k in range(n)]


def test_a_refused_write_names_the_server_and_keeps_what_was_committed(tmp_path):
    location = f"milvus-lite:{tmp_path / 'c.db'}"
    with create_collection(location, encoder_name="t", encoder_version="t/1", dim=4, colour_dim=0) as coll:
        coll.upsert(items(0, 5))
        real_upsert = coll._client.upsert

        def refusing_upsert(*args, **kwargs):  # what a Milvus out of its memory quota answers
            raise MilvusException(code=9, message="deny to write, reason: memory quota exceeded")

        coll._client.upsert = refusing_upsert
        with pytest.raises(VestisError, match=r"Milvus at .*c\.db could not write items: deny to write.*"
                                              r"Everything written before is kept"):
            coll.upsert(items(5, 5))
        coll._client.upsert = real_upsert
    with open_collection(location) as coll:
        assert len(coll) == 5
        coll.upsert(items(5, 5))
        assert len(coll) == 10


@pytest.mark.slow
def test_a_server_that_is_down_gives_a_clear_error():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(VestisError, match=f"cannot connect to Milvus at http://127.0.0.1:{port}"):
        open_collection(f"milvus://127.0.0.1:{port}/shop")
