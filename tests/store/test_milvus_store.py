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
        'labels["colour"] in ["Blue", "Na\\"vy"] and labels["kind"] in ["shirt"] and vid not in [7]')
    assert filter_expression({"colour": []}) == ""
    with pytest.raises(VestisError, match="control character"):
        literal("a\x00b")
    assert parse_index_spec("hnsw:M=16,efSearch=128") == ("HNSW", {"M": 16, "efConstruction": 200, "efSearch": 128})
    for bad, message in (("ivfpq", "use auto, exact"), ("hnsw:ef=128", "unknown parameter 'ef'"),
                         ("ivf:nlist=0", "nlist=0")):
        with pytest.raises(VestisError, match=message):
            parse_index_spec(bad)


def items(start: int, n: int) -> list[NewItem]:
    rng = np.random.default_rng(start)
    vectors = rng.normal(size=(n, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [NewItem(f"i{start + k}", f"/x/{start + k}.jpg", "h", vectors[k]) for k in range(n)]


def test_a_refused_write_names_the_server_and_keeps_what_was_committed(tmp_path):
    location = f"milvus-lite:{tmp_path / 'c.db'}"
    with create_collection(location, encoder_name="t", encoder_version="t/1", dim=4, colour_dim=0) as coll:
        coll.upsert(items(0, 5))
        real_upsert = coll.db.client.upsert

        def refusing_upsert(*args, **kwargs):  # what a Milvus out of its memory quota answers
            raise MilvusException(code=9, message="deny to write, reason: memory quota exceeded")

        coll.db.client.upsert = refusing_upsert
        with pytest.raises(VestisError, match=r"Milvus at .*c\.db could not write items: deny to write.*"
                                              r"Everything written before is kept"):
            coll.upsert(items(5, 5))
        coll.db.client.upsert = real_upsert
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


def titled(start: int, titles: list[str]) -> list[NewItem]:
    return [NewItem(it.id, it.source, it.hash, it.vector, metadata={"title": title, "colour": title.split()[0]})
            for it, title in zip(items(start, len(titles)), titles)]


def test_every_open_sees_the_writes_of_the_others(tmp_path):
    """Keyword search (a cache keyed by the collection's generation) sees items indexed, removed and
    re-indexed through other opens of the collection, as other processes would."""
    from vestis.store.keyword_index import KeywordIndex

    location = f"milvus-lite:{tmp_path / 'c.db'}"
    with create_collection(location, encoder_name="t", encoder_version="t/1", dim=4, colour_dim=0) as coll:
        coll.upsert(titled(0, ["red dress", "blue shirt"]))
    with open_collection(location) as reader:
        first = reader.generation
        assert {reader.items_by_vid(KeywordIndex(reader).search("dress", 5)[0])[0].id} == {"i0"}
    with open_collection(location) as writer:
        writer.remove(["i0"])
        writer.upsert(titled(2, ["green dress"]))
    with open_collection(location) as reader, open_collection(location) as other:
        assert reader.generation not in (0, first)
        found = [it.id for it in reader.items_by_vid(KeywordIndex(reader).search("dress", 5)[0])]
        assert found == ["i2"]
        other.upsert(titled(3, ["yellow dress"]))  # a write through another open, while this one is open
        found = [it.id for it in reader.items_by_vid(KeywordIndex(reader).search("dress", 5)[0])]
        assert sorted(found) == ["i2", "i3"]
        assert reader.metadata_columns()["colour"] == [("blue", 1), ("green", 1), ("yellow", 1)]


def test_filters_hold_only_the_values_some_item_has(tmp_path):
    """A filter of many values becomes an expression of the values the collection holds: its cost
    is bounded by the collection, not by the request."""
    location = f"milvus-lite:{tmp_path / 'c.db'}"
    with create_collection(location, encoder_name="t", encoder_version="t/1", dim=4, colour_dim=0) as coll:
        coll.upsert(titled(0, ["red dress", "blue shirt", "red shirt"]))
        asked = [f"colour {n}" for n in range(999)] + ["red"]
        assert coll.expression({"colour": asked}) == '(labels["colour"] == "red")'
        assert coll.expression({"colour": asked[:-1]}) is None
        assert coll.filter_vids({"colour": asked[:-1]}).size == 0
        vids, _scores, eligible = coll.search_vectors(items(0, 1)[0].vector, 5, filters={"colour": asked})
        assert eligible == 2 and sorted(it.id for it in coll.items_by_vid(vids)) == ["i0", "i2"]
    assert filter_expression({"colour": ["a", "b"]}, json_in=False) == '(labels["colour"] == "a" or labels["colour"] == "b")'


def test_no_traceback_from_milvus_lite_while_indexing(tmp_path, caplog):
    """Milvus Lite answers pymilvus's query iterator without AllocTimestamp: nothing is logged for it."""
    with create_collection(f"milvus-lite:{tmp_path / 'c.db'}", encoder_name="t", encoder_version="t/1", dim=4,
                           colour_dim=0) as coll:
        coll.upsert(items(0, 3))
        assert sorted(coll.stamps()) == ["i0", "i1", "i2"]
    assert [r for r in caplog.records if r.levelno >= 30] == []


HOLD = ("import sys, time; from vestis.store.factory import create_collection; "
        "c = create_collection(sys.argv[1], encoder_name='t', encoder_version='t/1', dim=4, colour_dim=0); "
        "print('held', flush=True); time.sleep(60)")


def test_a_held_milvus_lite_file_names_its_holder(tmp_path, capfd):
    import os
    import subprocess
    import sys
    from pathlib import Path

    location = f"milvus-lite:{tmp_path / 'c.db'}"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, location], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(VestisError, match=rf"another process holds the Milvus Lite database .*c\.db: "
                                              rf"process {holder.pid} \(.*python.*\).*stop that one"):
            open_collection(location)
    finally:
        holder.kill()
        holder.wait()
    assert "Traceback" not in capfd.readouterr().err
    with open_collection(location) as coll:  # free again
        assert len(coll) == 0


def test_the_layout_follows_the_server(tmp_path, monkeypatch):
    """A server with several vector fields per collection (Milvus Lite here) keeps the colour beside
    the vector; one without (forced here; a Milvus 2.3 server in the contract suite) keeps it in its
    own collection, and both read back the same."""
    colour = np.array([0.6, 0.8], np.float32)
    item = NewItem("a", "/x/a.jpg", "h", items(0, 1)[0].vector, colour, {"colour": "red"})
    for one_vector, layout in (("0", "one Milvus collection"), ("1", "colours in their own")):
        monkeypatch.setenv("VESTIS_MILVUS_ONE_VECTOR", one_vector)
        location = f"milvus-lite:{tmp_path / f'c{one_vector}.db'}"
        with create_collection(location, encoder_name="t", encoder_version="t/1", dim=4, colour_dim=2) as coll:
            coll.upsert([item])
        monkeypatch.delenv("VESTIS_MILVUS_ONE_VECTOR")
        with open_collection(location) as coll:  # the layout is the collection's, not the server's
            assert coll.info()["layout"].startswith(layout)
            np.testing.assert_allclose(coll.vector_of("a")[1], colour)
            np.testing.assert_allclose(coll.table().view[2][0], colour)


def test_the_joint_model_hint_names_the_collection_as_given(tmp_path):
    """The hint of a word search that needs a joint model names the --collection the user gave
    (not the folder of side files)."""
    from typer.testing import CliRunner

    from vestis.cli import app

    location = f"milvus-lite:{tmp_path / 'c.db'}"
    create_collection(location, encoder_name="t", encoder_version="t/1", dim=4, colour_dim=0).close()
    result = CliRunner().invoke(app, ["search", "--collection", location, "--text", "red dress", "--mode", "vector"])
    said = result.output + str(result.exception or "")  # the error, as `vestis` prints it
    assert result.exit_code != 0 and f"vestis text build --collection {location} --model" in said


def test_exact_batch_search_on_an_ivf_collection_ranks_every_item(tmp_path):
    """`vestis eval --index exact` on a Milvus collection indexed otherwise: every item scored (the
    local store's exact scan over its vectors), each query's own item left out; another spec is
    refused with the command that builds it."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=(40, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    with create_collection(f"milvus-lite:{tmp_path}/m.db", encoder_name="t", encoder_version="t/1", dim=8,
                           colour_dim=0, index_spec="ivf:nlist=4,nprobe=1") as coll:
        vids = coll.upsert([NewItem(f"i{k}", f"/{k}.jpg", f"h{k}", v[k], None, {"k": str(k % 2)}) for k in range(40)])
        coll.persist()
        found, _, eligible = coll.search_batch(v[:5], 5, exclude=[(vids[i],) for i in range(5)], index="exact")
        expected = [[vids[j] for j in sorted(set(range(40)) - {i}, key=lambda j: -float(v[j] @ v[i]))[:5]]
                    for i in range(5)]
        assert found.tolist() == expected and eligible.tolist() == [39] * 5
        with pytest.raises(VestisError, match="vestis index"):
            coll.search_batch(v[:1], 5, index="hnsw")
