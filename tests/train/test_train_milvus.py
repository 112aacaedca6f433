"""`vestis train` reads its collection through the store factory: a stage-1 run on a Milvus Lite
copy of the garment collection trains on the same items, vectors and split as on the local store."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")


@pytest.fixture(scope="module")
def milvus_garments(garment_collection, tmp_path_factory) -> str:
    """The garment collection's items and stored vectors in a Milvus Lite collection; its location."""
    from vestis.store.collection import Collection, NewItem
    from vestis.store.factory import create_collection

    location = f"milvus-lite:{tmp_path_factory.mktemp('milvus') / 'garments.db'}"
    with Collection.open(garment_collection) as local:
        items = list(local.iter_items())
        table = local.table()
        vectors = table.view[1][table.rows_of(np.array([it.vid for it in items], np.int64))]
        settings = {"encoder_name": local.encoder_name, "encoder_version": local.encoder_version,
                    "dim": local.dim, "colour_dim": 0}
    with create_collection(location, **settings) as coll:
        coll.upsert([NewItem(it.id, it.source, it.hash, v, None, it.metadata) for it, v in zip(items, vectors)])
    return location


@pytest.mark.slow
def test_a_stage1_run_trains_on_a_milvus_lite_collection(milvus_garments, garment_config, tmp_path):
    from vestis.cli import app
    from vestis.eval.protocols import load_split
    from vestis.train.command import train_from_config

    on_milvus = train_from_config(garment_config, [f"data.collection={milvus_garments}", "train.epochs=1",
                                                   f"output={tmp_path / 'milvus'}"])
    local = train_from_config(garment_config, ["train.epochs=1", f"output={tmp_path / 'local'}"])
    assert on_milvus["epochs_run"] == 1 and on_milvus["split_sizes"] == local["split_sizes"]
    assert load_split(tmp_path / "milvus" / "split.csv") == load_split(tmp_path / "local" / "split.csv")
    # the untrained backbone's figures come from the stored vectors: the same on both stores
    assert on_milvus["test_baseline"] == pytest.approx(local["test_baseline"])
    assert 0 < on_milvus["test"]["mAP@10"] <= 1
    # the command answers a Milvus location it cannot find with where it looked
    absent = milvus_garments.replace("garments.db", "absent.db")
    res = CliRunner().invoke(app, ["train", "--config", str(garment_config), "--set",
                                   f"data.collection={absent}", "--set", "train.epochs=1"])
    assert res.exit_code != 0 and f"no collection at {absent}" in str(res.exception)
