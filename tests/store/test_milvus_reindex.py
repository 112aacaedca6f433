"""`vestis reindex` on Milvus Lite, through a collection alias: real (generated) JPEGs re-embedded
by another encoder while a reader keeps searching, a killed run resumed with items added and
removed meanwhile, keep-old then rollback, and a kill inside the first switch of a collection made
before aliases."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import write_catalogue
from vestis.data import open_catalogue
from vestis.errors import EncoderMismatchError
from vestis.search.engine import Engine
from vestis.store.factory import open_collection
from vestis.store.ingest import build_items, index_catalogue, open_or_create
from vestis.store.reindex import ReindexError, reindex, rollback
from vestis.store.reindex_stage import EncoderSettings

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")
from vestis.store.milvus.layout import Settings  # noqa: E402
from vestis.store.milvus.reindex import MIGRATING, MilvusStage  # noqa: E402

COLOURS = {"red": (200, 30, 30), "blue": (30, 50, 200), "green": (30, 160, 60)}
SHAPES = ["shirt", "trousers"]

pytestmark = pytest.mark.slow


@pytest.fixture(params=["milvus-lite", pytest.param("milvus-server", marks=pytest.mark.milvus_server)])
def location(request, tmp_path):
    """Milvus Lite, or the real Milvus 2.3 server (``pytest -m milvus_server``: one vector field per
    collection, so the split layout)."""
    if request.param == "milvus-server":
        return request.getfixturevalue("milvus_server") + "r_" + "".join(
            c if c.isalnum() else "_" for c in request.node.name)[:150]
    return f"milvus-lite:{tmp_path / 'shop.db'}"


@pytest.fixture
def shop(tmp_path):
    write_catalogue(tmp_path / "shop", COLOURS, SHAPES)
    return tmp_path / "shop"


def build(shop, location, encoder):
    coll = open_or_create(location, encoder, "exact")
    index_catalogue(coll, open_catalogue(shop), encoder, batch_size=4, progress=False)
    return coll


def vectors(coll):
    return {it.id: coll.vector_of(it.id)[0] for it in coll.iter_items()}


def assert_embedded_by(coll, shop, tmp_path, encoder):
    expected = vectors(build(shop, tmp_path / f"fresh-{encoder.name}", encoder))  # local, the same catalogue
    after = vectors(coll)
    assert set(after) == set(expected)
    for item_id in after:
        np.testing.assert_allclose(after[item_id], expected[item_id], atol=1e-5)


def test_reindex_moves_the_alias_while_a_reader_keeps_answering(shop, tmp_path, location, old_encoder, new_encoder):
    coll = build(shop, location, old_encoder)
    reader = Engine.open(location)  # a server's engine, opened before the reindex
    query = shop / "red-shirt-0.jpg"
    answers = []

    def search_meanwhile(done, total):
        hits = reader.search(reader.query(image=query), k=3).hits
        answers.append((reader.encoder.version, hits[0].id, hits[0].score))

    report = reindex(coll, new_encoder, batch_size=4, progress=False, on_progress=search_meanwhile)
    assert (report.items, report.embedded, report.resumed) == (12, 12, 0)
    assert len(answers) == 3 and all(a == (old_encoder.version, "red-shirt-0", pytest.approx(1.0, abs=1e-3))
                                     for a in answers)
    assert coll.physical == f"{coll.name}__r1" and coll.encoder_version == new_encoder.version
    assert_embedded_by(coll, shop, tmp_path, new_encoder)
    late = [it for batch in build_items(old_encoder, list(open_catalogue(shop))[:1], {}, "uploads", progress=False)
            for it in batch[0]]  # an upload the reader's process embedded just before the switch
    late[0].id = "upload"
    with pytest.raises(EncoderMismatchError):
        reader.collection.upsert(late)
    hits = reader.search(reader.query(image=query), k=3).hits  # the reader follows at its next search
    assert reader.encoder.version == new_encoder.version and hits[0].id == "red-shirt-0"
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert not coll.db.has(f"{coll.name}__r0") and coll.previous_encoder() is None
    with pytest.raises(ReindexError, match="already embedded"):
        reindex(coll, new_encoder, progress=False)
    reindex(coll, old_encoder, batch_size=4, progress=False)  # a second switch: alias to alias
    assert coll.physical == f"{coll.name}__r2" and not coll.db.has(f"{coll.name}__r1")
    assert_embedded_by(coll, shop, tmp_path, old_encoder)
    reader.close()


def test_a_killed_run_resumes_and_keeps_items_added_and_removed_meanwhile(shop, tmp_path, location, old_encoder,
                                                                          new_encoder):
    coll = build(shop, location, old_encoder)
    stage = MilvusStage(coll, EncoderSettings.of(new_encoder))  # a run killed after half the items
    half = stage.missing()[:6]
    stage.add(half, new_encoder.embed_images([open_image(it.source) for it in half]))
    del stage
    assert coll.encoder_version == old_encoder.version and coll.physical == coll.name
    coll.remove(["green-trousers-1"])
    (shop / "green-trousers-1.jpg").rename(shop / "late.jpg")
    index_catalogue(coll, open_catalogue(shop), old_encoder, batch_size=4, progress=False)

    report = reindex(coll, new_encoder, batch_size=4, progress=False)
    removed_staged = "green-trousers-1" in {it.id for it in half}  # vids are random: any half was staged
    assert (report.resumed, report.embedded, report.items) == (6, 6 + removed_staged, 12)
    assert "late" in vectors(coll) and "green-trousers-1" not in vectors(coll)
    assert_embedded_by(coll, shop, tmp_path, new_encoder)


def open_image(source):
    from PIL import Image

    return Image.open(source).convert("RGB")


def test_keep_old_then_rollback(shop, tmp_path, location, old_encoder, new_encoder):
    coll = build(shop, location, old_encoder)
    with pytest.raises(ReindexError, match="kept no earlier vectors"):
        rollback(coll, progress=False)
    reindex(coll, new_encoder, keep_old=True, batch_size=4, progress=False)
    assert coll.previous_encoder() == EncoderSettings.of(old_encoder)
    (shop / "extra.jpg").write_bytes((shop / "red-shirt-1.jpg").read_bytes())
    index_catalogue(coll, open_catalogue(shop), new_encoder, batch_size=4, progress=False)
    report = rollback(coll, batch_size=4, progress=False)
    assert report.embedded == 1 and coll.encoder_version == old_encoder.version
    assert coll.physical == f"{coll.name}__r0" and coll.previous_encoder() is None
    assert_embedded_by(coll, shop, tmp_path, old_encoder)


def test_a_kill_inside_the_first_switch_is_finished_on_open(shop, tmp_path, location, old_encoder, new_encoder):
    coll = build(shop, location, old_encoder)
    stage = MilvusStage(coll, EncoderSettings.of(new_encoder))
    todo = stage.missing()
    stage.add(todo, new_encoder.embed_images([open_image(it.source) for it in todo]))
    # killed after the collection NAME was dropped and before the alias took its name
    Settings(coll.db, coll.name).write({MIGRATING: stage.physical})
    coll.db.drop(coll.name)
    coll.close()
    with open_collection(location) as reopened:
        assert reopened.physical == f"{reopened.name}__r1" and reopened.encoder_version == new_encoder.version
        assert_embedded_by(reopened, shop, tmp_path, new_encoder)
