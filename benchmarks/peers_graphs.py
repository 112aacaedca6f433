"""Is it the graph? FAISS HNSW32,SQ8 (vestis's ``auto``) and HNSW16,SQ8 against hnswlib M16 over
float32, raw (no vestis wrapper), on the generated vectors of ``benchmarks/peers.py``: each at the
lowest ef that reaches recall@10 >= 0.95 on 200 queries, then 300 interleaved single queries, 1
thread, with warm caches and with the caches emptied (a 715 MB matrix-vector product) between calls.

    PYTHONPATH=. .venv/bin/python benchmarks/peers_graphs.py --like COLLECTION [--out FILE.json]
"""

import argparse
import json
import time

import faiss
import hnswlib
import numpy as np
from threadpoolctl import threadpool_limits
from vestis.bench.datasets import prepare_dataset
from vestis.bench.ann import knn_recall
from vestis.encoders.cpu import describe_cpu

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--like", required=True, help="collection (or .npy) the generated vectors are fitted to")
ap.add_argument("--out", help="JSON file for the results")
args = ap.parse_args()
ds = prepare_dataset("generated", n=139_709, like=args.like, queries=1000, k=10, threads=2, log=print)
base_mm, queries, _, truth_scores = ds.arrays()
base = np.ascontiguousarray(base_mm)
n, d = base.shape
faiss.omp_set_num_threads(2)
out = {}


def fbuild(spec):
    ix = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
    ix.hnsw.efConstruction = 40
    if not ix.is_trained:
        ix.train(base[np.sort(np.random.default_rng(0).choice(n, 16384, replace=False))])
    t = time.time()
    ix.add(base)
    print(spec, "build", round(time.time() - t), flush=True)
    return ix


idx = {"faiss HNSW32,SQ8": fbuild("HNSW32,SQ8"), "faiss HNSW16,SQ8": fbuild("HNSW16,SQ8")}
hl = hnswlib.Index(space="ip", dim=d)
hl.init_index(max_elements=n, ef_construction=40, M=16, random_seed=0)
t = time.time()
hl.add_items(base, np.arange(n), num_threads=2)
print("hnswlib build", round(time.time() - t))


def fsearch(ix):
    def s(q, ef):
        if ix.hnsw.efSearch != ef:
            ix.hnsw.efSearch = ef
        return ix.search(q, 10)[1]

    return s


def hsearch(q, ef):
    hl.set_ef(ef)
    return hl.knn_query(q, k=10, num_threads=1)[0].astype(np.int64)


fns = {name: fsearch(ix) for name, ix in idx.items()}
fns["hnswlib M16"] = hsearch
chosen = {}
with threadpool_limits(1):
    faiss.omp_set_num_threads(1)
    for name, fn in fns.items():
        for ef in [10, 12, 16, 20, 24, 32, 48, 64]:
            found = np.concatenate([fn(q[None], ef) for q in queries[:200]])
            r = knn_recall(found, queries[:200], base, truth_scores[:200], 10)
            if r >= 0.95:
                chosen[name] = (ef, r)
                break
    print(chosen)
    thrash_buf = base
    rng = np.random.default_rng(0)
    for mode in ("warm", "cold"):
        t_ = {k: [] for k in fns}
        for i in range(300):
            q = queries[i % 1000][None]
            for name in rng.permutation(list(fns)):
                if mode == "cold":
                    (thrash_buf @ queries[(i + 1) % 1000]).argmax()
                t0 = time.perf_counter()
                fns[name](q, chosen[name][0])
                t_[name].append((time.perf_counter() - t0) * 1000)
        for name, v in t_.items():
            out.setdefault(name, {})[mode] = float(np.median(v))
            out[name]["ef"], out[name]["recall"] = chosen[name]
text = json.dumps({"cpu": describe_cpu(), "results": out}, indent=1)
print(text)
if args.out:
    with open(args.out, "w") as f:
        f.write(text + "\n")
