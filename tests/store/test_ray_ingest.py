"""Ingest on Ray: a local 2-CPU cluster, started here and shut down after, gives the same items and
vectors as the single-process path; killing the driver loses nothing committed; a re-run finishes."""

from __future__ import annotations


import numpy as np
import pytest

from tests.conftest import garment_image, jpeg_bytes
from tests.store.test_store_contract import _location, kill_while_indexing, write_catalogue
from vestis.data import open_catalogue
from vestis.encoders import get_encoder
from vestis.store.factory import open_collection
from vestis.store.ingest import index_catalogue, open_or_create
from vestis.store.ray_ingest import RayEmbedder

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs (offline: no dashboard), shut down after the module's tests."""
    context = ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield context.address_info["address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def encoder():
    return get_encoder()


def table_by_id(coll) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    vids, vectors, colours = coll.table().view
    row = {int(v): r for r, v in enumerate(vids)}
    return {it.id: (vectors[row[it.vid]], colours[row[it.vid]], it.hash) for it in coll.iter_items()}


def test_ray_ingest_matches_single_process(cluster, encoder, tmp_path):
    """Into Milvus Lite (the kill test below writes to a local collection)."""
    folder = tmp_path / "shop"
    write_catalogue(folder, 14)
    (folder / "broken.jpg").write_bytes(jpeg_bytes(garment_image((1, 2, 3)))[:300])  # truncated
    catalogue = open_catalogue(folder)
    with open_or_create(tmp_path / "single", encoder, None) as coll:
        single_report = index_catalogue(coll, catalogue, encoder, batch_size=4, progress=False)
        single = table_by_id(coll)
    with open_or_create(_location("milvus-lite", tmp_path), encoder, None) as coll:
        report = index_catalogue(coll, catalogue, encoder, batch_size=2, progress=False,  # two blocks, two actors
                                 embed=RayEmbedder(address=cluster, actors=2))
        on_ray = table_by_id(coll)
        assert (report.added, [f[0] for f in report.failures]) == (14, ["broken"])
        assert single_report.added == 14 and set(on_ray) == set(single)
        for item_id, (vector, colour, digest) in single.items():
            assert np.max(np.abs(on_ray[item_id][0] - vector)) <= 1e-5
            assert np.max(np.abs(on_ray[item_id][1] - colour)) <= 1e-5 and on_ray[item_id][2] == digest
        # Incremental on Ray too: one changed image is the only one embedded again.
        (folder / "red-003.jpg").write_bytes(jpeg_bytes(garment_image((120, 0, 0), "shirt", seed=50)))
        again = index_catalogue(coll, open_catalogue(folder), encoder, batch_size=4, progress=False,
                                embed=RayEmbedder(address=cluster, actors=2))
        assert (again.added, again.updated, again.unchanged, again.embedded) == (0, 1, 13, 1)





def test_killing_the_ray_driver_loses_nothing(cluster, encoder, tmp_path):
    folder = tmp_path / "many"
    write_catalogue(folder, 48)
    location = str(tmp_path / "c")
    committed = kill_while_indexing(folder, location, 8, cluster)
    with open_collection(location) as coll:
        survived = len(coll)
        assert survived >= committed and len(coll.table()) == survived
    with open_or_create(location, encoder, None) as coll:
        report = index_catalogue(coll, open_catalogue(folder), encoder, batch_size=4, progress=False,
                                 embed=RayEmbedder(address=cluster, actors=2))
        assert report.added == 48 - survived and len(coll) == 48
