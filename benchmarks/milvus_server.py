"""What one query costs on a real Milvus server, beside Milvus Lite and the local store, on the
same collection.

    .venv/bin/python benchmarks/milvus_server.py [--source ../shared/datasets/fashion-product-images-300.zip]
        [--queries 300] [--out benchmarks/results/milvus-server.json]

SOURCE is indexed once into a local collection; its items (the very same vectors, colours and
metadata) are then written into a Milvus Lite file and into a collection on a Milvus 2.3
standalone server (the ``milvus`` package's embedded server, started here, stopped at the end).
Each store answers the same QUERIES image searches by vector (an item's stored vector; k=10, no
filter) through :class:`vestis.search.searcher.Searcher`, the path ``vestis search`` and the API
take, after 20 warm-up queries; the stores take turns query by query, so load drifts hit all
three. Every store uses its default index for this size (exact: FLAT on Milvus). Reported: p50 and
p90 in milliseconds, and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.store.milvus_server import start_server  # noqa: E402
from vestis.data import open_catalogue  # noqa: E402
from vestis.encoders import get_encoder  # noqa: E402
from vestis.search.searcher import Query, Searcher  # noqa: E402
from vestis.store.db import NewItem  # noqa: E402
from vestis.store.factory import create_collection, open_collection  # noqa: E402
from vestis.store.ingest import index_catalogue, open_or_create  # noqa: E402

WARM_UP = 20


def copy_into(location: str, source) -> None:
    """A collection at ``location`` holding ``source``'s items, vectors and settings."""
    with create_collection(location, encoder_name=source.encoder_name, encoder_version=source.encoder_version,
                           encoder_source=source.encoder_source, dim=source.dim, colour_dim=source.colour_dim,
                           colour_version=source.settings.get("colour_version", "")) as coll:
        batch = []
        for item in source.iter_items():
            vector, colour = source.vector_of(item.id)
            batch.append(NewItem(item.id, item.source, item.hash, vector, colour, item.metadata, item.stamp,
                                 item.catalogue))
            if len(batch) == 256:
                coll.upsert(batch)
                batch = []
        coll.upsert(batch)
        coll.persist()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default=str(ROOT.parent / "shared/datasets/fashion-product-images-300.zip"))
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/milvus-server.json")
    args = ap.parse_args()
    encoder = get_encoder()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server = start_server(tmp / "server")
        os.environ["VESTIS_MILVUS_FILES"] = str(tmp / "files")
        try:
            local = str(tmp / "local")
            with open_or_create(local, encoder, None) as coll:
                index_catalogue(coll, open_catalogue(args.source), encoder, progress=False)
            stores = {"local": local, "milvus-lite": f"milvus-lite:{tmp / 'lite.db'}",
                      "milvus-server": f"milvus://127.0.0.1:{server.listen_port}/bench"}
            with open_collection(local) as source:
                for name, location in stores.items():
                    if name != "local":
                        copy_into(location, source)
                ids = [it.id for it in source.iter_items()]
                rng = np.random.default_rng(0)
                chosen = rng.choice(len(ids), size=min(args.queries + WARM_UP, len(ids)), replace=False)
                queries = [source.vector_of(ids[i])[0] for i in chosen]
            opened = {name: open_collection(location) for name, location in stores.items()}
            searchers = {name: Searcher(coll) for name, coll in opened.items()}
            load_before = os.getloadavg()
            times: dict[str, list[float]] = {name: [] for name in searchers}
            for n, query in enumerate(queries):
                for name, searcher in searchers.items():
                    started = time.perf_counter()
                    searcher.search(Query(query), k=10)
                    if n >= WARM_UP:
                        times[name].append((time.perf_counter() - started) * 1000)
            load_after = os.getloadavg()
            result = {
                "source": args.source, "items": len(ids), "queries": len(queries) - WARM_UP, "k": 10,
                "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                             if line.startswith("model name")), "?"),
                "cores": os.cpu_count(), "load_before": load_before, "load_after": load_after,
                "ms": {name: {"p50": float(np.percentile(t, 50)), "p90": float(np.percentile(t, 90))}
                       for name, t in times.items()},
                "index": {name: coll.active_index_spec for name, coll in opened.items()},
            }
            for coll in opened.values():
                coll.close()
        finally:
            server.stop()
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
