"""Ingest on Ray: a local 2-CPU cluster, started here and shut down after, gives the same items and
vectors as the single-process path; killing the driver loses nothing committed; a re-run finishes."""

from __future__ import annotations

import time

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


# Ray 2.60 waits a fixed 30 s (ray/_private/node.py; no setting changes it) for a new raylet to
# register with the GCS, polling services.get_node; on a busy machine the start can miss that
# window. The fixture lets each poll wait up to RAY_NODE_WAIT_S, and tries the whole start again on
# that timeout only. The core worker's own wait for the raylet is a setting, given the same room.
RAY_START_TRIES = 2
RAY_NODE_WAIT_S = 180
RAY_STARTUP_TIMEOUT = "timed out during startup"
RAY_ENV = {"RAY_raylet_start_wait_time_s": str(RAY_NODE_WAIT_S)}


def start_local_cluster(init, shutdown, tries: int = RAY_START_TRIES):
    """``init()``'s context, trying again (after ``shutdown()``) when Ray's node start times out;
    any other error, or a timeout on the last try, is raised."""
    for attempt in range(1, tries + 1):
        try:
            return init()
        except Exception as e:  # Ray raises a bare Exception for the startup timeout
            shutdown()
            if attempt == tries or RAY_STARTUP_TIMEOUT not in str(e):
                raise
            print(f"ray start {attempt} of {tries} timed out (a busy machine); trying again")
    raise AssertionError("unreachable")


def patiently(get_node, wait_s: float):
    """``get_node`` that keeps asking for up to ``wait_s`` while the node is not registered yet."""
    def get_node_patiently(*args, **kwargs):
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return get_node(*args, **kwargs)
            except RuntimeError:  # not registered yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    return get_node_patiently


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs (offline: no dashboard), shut down after the module's tests."""
    from ray._private import services

    with pytest.MonkeyPatch.context() as patch:
        for key, value in RAY_ENV.items():
            patch.setenv(key, value)
        patch.setattr(services, "get_node", patiently(services.get_node, RAY_NODE_WAIT_S))
        context = start_local_cluster(
            lambda: ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False),
            ray.shutdown)
    yield context.address_info["address"]
    ray.shutdown()


def test_cluster_start_is_tried_again_after_a_startup_timeout_only():
    calls: list[str] = []

    def flaky(outcomes):
        def init():
            outcome = outcomes.pop(0)
            calls.append(outcome)
            if outcome != "ok":
                raise Exception(outcome)  # noqa: TRY002 - what Ray raises
            return "context"
        return init

    assert start_local_cluster(flaky([f"The current node {RAY_STARTUP_TIMEOUT}.", "ok"]), lambda: calls.append("down")) \
        == "context"
    assert calls == [f"The current node {RAY_STARTUP_TIMEOUT}.", "down", "ok"]
    with pytest.raises(Exception, match="raylet crashed"):  # a real failure is not retried
        start_local_cluster(flaky(["raylet crashed", "ok"]), lambda: None)
    with pytest.raises(Exception, match=RAY_STARTUP_TIMEOUT):  # nor forever
        start_local_cluster(flaky([RAY_STARTUP_TIMEOUT] * 3), lambda: None)


@pytest.fixture(scope="module")
def encoder():
    return get_encoder()


def table_by_id(coll) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    vids, vectors, colours = coll.table().view
    row = {int(v): r for r, v in enumerate(vids)}
    return {it.id: (vectors[row[it.vid]], colours[row[it.vid]], it.hash) for it in coll.iter_items()}


def test_node_lookup_waits_for_a_slow_raylet_then_gives_up():
    answers = [RuntimeError("not yet"), RuntimeError("not yet"), {"node_manager_port": 1}]

    def get_node(*args):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert patiently(get_node, 30)("gcs", "node") == {"node_manager_port": 1}
    answers[:] = [RuntimeError("not yet")] * 10
    with pytest.raises(RuntimeError, match="not yet"):
        patiently(get_node, 0.6)("gcs", "node")


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
