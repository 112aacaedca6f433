"""vestis against the query pipelines and ANN libraries a user would otherwise run, side by side.

    .venv/bin/python benchmarks/peers.py --like COLLECTION --out benchmarks/results/peers

COLLECTION is a collection folder (or an ``.npy`` of embeddings) whose vectors the generated ones are
fitted to, e.g. one made with ``vestis index ../shared/datasets/fashion-product-images-300.zip -c fpi300``.

Everything is measured in one process, in one run, interleaved query by query (each round runs
every contender once, in a shuffled order), so load on the machine falls on all of them alike.

Embed (decoded real JPEG -> vector, preprocessing included), ``--threads`` threads for both:

* vestis: EfficientNet-Lite0 exported to ONNX, onnxruntime (the default encoder).
* deep-fashion-retrieval: ResNet-50 in eager PyTorch at 224 px (resize 256, centre crop), then its
  ``Linear(2048, 512)`` feature layer. The network is built here with **random weights** (no
  weights are downloaded): the compute is what is timed, not the features.

Search (one query at a time, 1 thread, top 10) over **generated** vectors
(``vestis.index.synthetic``: 139,709 like the deep-fashion-retrieval database, fitted to the
embeddings of ``--like``), each contender at the cheapest setting of its search parameter that
reaches ``--target`` recall@10 (tie-aware, as ``vestis bench ann`` counts it):

* vestis: the ``auto`` index at this size (HNSW32 over 8-bit codes, k or 2k candidates re-scored
  exactly, behind vestis's ``VectorIndex`` wrapper; efSearch and k_factor swept together), and
  vestis's exact scan;
* raw FAISS: the very same HNSW32,SQ8 graph searched through FAISS directly (no id mapping, no
  re-scoring: the floor under vestis's wrapper), and on request (``--only faiss-hnsw`` or
  ``faiss-hnsw16-sq8``) FAISS HNSW32 over float32 vectors or HNSW16 over 8-bit codes;
* hnswlib and usearch over float32 vectors, M (connectivity) 16 and the same construction effort
  as vestis's graph (``ef_construction`` / ``expansion_add`` 40, FAISS's default);
* the ArcFace fashion-retrieval project's Annoy setup (``dot`` metric, 70 trees), at its default
  ``search_k`` and at the ``search_k`` that reaches the target;
* deep-fashion-retrieval's naive query (``scipy`` ``cdist`` Euclidean over all 139,709 512-d
  features, ``argpartition``) and its k-means query (scikit-learn ``KMeans``, 50 clusters: scan the
  query's cluster only). Its 512-d features are a fixed random projection of the generated vectors
  (so they keep their clusters); its recall is counted against exact Euclidean search on them.

Writes ``results.json`` and ``results.md`` (the table that goes into BENCHMARKS.md) to ``--out``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle FAISS threads must not spin (read at import)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

try:
    import annoy
    import hnswlib
    import usearch.index
except ImportError as missing:  # the peers are an optional extra
    raise SystemExit(f"benchmarks/peers.py needs the peers' libraries ({missing.name} is missing): "
                     "pip install -e '.[bench]'") from missing
from PIL import Image  # noqa: E402
from scipy.spatial.distance import cdist  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402
from torch import nn  # noqa: E402

from vestis.data.images import decode_image, is_image_name  # noqa: E402
from vestis.encoders import get_encoder  # noqa: E402
from vestis.encoders.cpu import describe_cpu  # noqa: E402
from vestis.index import make_index  # noqa: E402
from vestis.index.auto import ANN_SPEC  # noqa: E402
from vestis.index.faiss_backend import PLAIN_TRAIN_SAMPLE  # noqa: E402
from vestis.bench.ann import knn_recall  # noqa: E402
from vestis.bench.datasets import prepare_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
K = 10
DF_DIM = 512  # deep-fashion-retrieval's feature size
DF_CLUSTERS = 50  # its kmeans.py default
ARCFACE_TREES = 70  # the ArcFace project's eval_savingANN.py
SINGLE_SETTING_QUERIES = 50  # recall of a method with nothing to tune (exact scans, k-means) needs fewer
EF_CONSTRUCTION = 40  # graph construction effort of every HNSW here: FAISS's default, which vestis uses
EFS = [10, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]  # efSearch settings swept on FAISS's graphs
OTHER_GRAPHS = {"faiss-hnsw": "HNSW32", "faiss-hnsw16-sq8": "HNSW16,SQ8"}  # raw FAISS graphs --only may add


# --- deep-fashion-retrieval's network: ResNet-50 + Linear(2048, 512), random weights -----------


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


def resnet50_features(dim: int = DF_DIM) -> nn.Module:
    """ResNet-50 (3-4-6-3 bottlenecks) to global average pooling, then ``Linear(2048, dim)``."""
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                               nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for b in range(blocks):
            layers.append(Bottleneck(cin, width, stride if b == 0 else 1))
            cin = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, dim)]
    torch.manual_seed(0)
    return nn.Sequential(*layers).eval()


MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def torchvision_preprocess(image: Image.Image) -> torch.Tensor:
    """Resize the shorter side to 256, centre-crop 224, scale to 0-1, ImageNet mean/std (what
    deep-fashion-retrieval's test transform does with torchvision)."""
    w, h = image.size
    s = 256 / min(w, h)
    image = image.resize((max(256, round(w * s)), max(256, round(h * s))), Image.BILINEAR)
    w, h = image.size
    left, top = (w - 224) // 2, (h - 224) // 2
    x = np.asarray(image.crop((left, top, left + 224, top + 224)), np.float32) / 255.0
    return torch.from_numpy(((x - MEAN) / STD).transpose(2, 0, 1).copy())[None]


# --- contenders -------------------------------------------------------------------------------


@dataclass
class Contender:
    """A search method: ``search(q, setting) -> (1, K) rows``; ``settings`` swept for recall."""

    name: str
    what: str
    search: Callable[[np.ndarray, Any], np.ndarray]
    settings: list[Any]
    param: str  # what the setting is
    space: str = "cosine"  # "cosine" on the 1280-d vectors, "l2-512" on deep-fashion's features
    embed: str | None = None  # the embed pipeline of this contender, when it has one
    build_s: float = 0.0
    memory_mb: float = 0.0
    sweep: list[dict[str, Any]] = field(default_factory=list)
    chosen: Any = None
    recall: float = 0.0
    times: list[float] = field(default_factory=list)


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def _timed_build(make: Callable[[], Any]) -> tuple[Any, float, float]:
    before, t = _rss(), time.perf_counter()
    obj = make()
    return obj, time.perf_counter() - t, (_rss() - before) / 2**20


def build_contenders(base: np.ndarray, feats: np.ndarray, build_threads: int, log: Callable[[str], None],
                     only: set[str] | None) -> list[Contender]:
    n, dim = base.shape
    ids = np.arange(n, dtype=np.int64)
    out: list[Contender] = []

    def want(name: str) -> bool:
        return only is None or name in only
    faiss.omp_set_num_threads(build_threads)

    if want("vestis") or want("faiss-sq8"):
        log("building vestis auto index (HNSW32,SQ8)")

        def make_vestis() -> Any:
            index = make_index(ANN_SPEC, dim)
            index.add(ids, base)
            index.build()
            return index
        vx, b_s, mem = _timed_build(make_vestis)
        # vestis re-scores k * k_factor candidates, and FAISS's beam is at least that many: with
        # k_factor 2 any efSearch up to 2k searches as 2k, so the cheap end tries k_factor 1 first.
        settings = [(ef, 1) for ef in EFS if ef < 2 * K] + [(ef, 2) for ef in [2 * K, *(e for e in EFS if e > 2 * K)]]

        def vestis_search(q: np.ndarray, setting: tuple[int, int]) -> np.ndarray:
            ef, k_factor = setting
            if (vx.params["efSearch"], vx.params["k_factor"]) != setting:
                vx.set_params(efSearch=ef, k_factor=k_factor)
            return vx.search(q, K)[1]
        out.append(Contender("vestis", f"vestis `{ANN_SPEC.split('?')[0]}` (auto), wrapper + exact re-scoring",
                             vestis_search, settings, "efSearch,k_factor", embed="vestis", build_s=b_s,
                             memory_mb=mem))
        # A copy of the FAISS object inside the wrapper (rows = ids here), so that each keeps its
        # own efSearch; set only when it changes, as vestis_search does.
        raw = faiss.clone_index(vx._index)  # an IndexHNSWSQ, as FAISS downcasts what it returns

        def raw_search(q: np.ndarray, ef: int) -> np.ndarray:
            if raw.hnsw.efSearch != ef:
                raw.hnsw.efSearch = ef
            return raw.search(q, K)[1]
        out.append(Contender("faiss-sq8", "raw FAISS, the same HNSW32,SQ8 graph, no wrapper, no re-scoring",
                             raw_search, EFS, "efSearch", build_s=b_s))
    if want("vestis-exact"):
        exact, b_s, mem = _timed_build(lambda: _exact(ids, base))
        out.append(Contender("vestis-exact", "vestis exact scan (float32, BLAS)",
                             lambda q, _: exact.search(q, K)[1], [None], "-", embed="vestis", build_s=b_s,
                             memory_mb=mem))
    for name, factory in OTHER_GRAPHS.items():  # on request only (--only): other FAISS graphs, raw
        if only is None or name not in only:
            continue
        log(f"building FAISS {factory}")

        def make_graph(factory: str = factory) -> Any:
            index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = EF_CONSTRUCTION
            if not index.is_trained:  # the scalar quantiser: trained on a sample as vestis trains its own
                sample = np.random.default_rng(0).choice(len(base), min(len(base), PLAIN_TRAIN_SAMPLE), replace=False)
                index.train(base[np.sort(sample)])
            index.add(base)
            return index
        graph, b_s, mem = _timed_build(make_graph)

        def graph_search(q: np.ndarray, ef: int, graph: Any = graph) -> np.ndarray:
            if graph.hnsw.efSearch != ef:
                graph.hnsw.efSearch = ef
            return graph.search(q, K)[1]
        out.append(Contender(name, f"raw FAISS {factory} (efConstruction {EF_CONSTRUCTION})", graph_search, EFS,
                             "efSearch", build_s=b_s, memory_mb=mem))
    if want("hnswlib"):
        log(f"building hnswlib (M=16, ef_construction={EF_CONSTRUCTION})")

        def make_hnswlib() -> Any:
            index = hnswlib.Index(space="ip", dim=dim)
            index.init_index(max_elements=n, ef_construction=EF_CONSTRUCTION, M=16, random_seed=0)
            index.add_items(base, ids, num_threads=build_threads)
            return index
        hl, b_s, mem = _timed_build(make_hnswlib)

        def hl_search(q: np.ndarray, ef: int) -> np.ndarray:
            hl.set_ef(ef)
            return hl.knn_query(q, k=K, num_threads=1)[0].astype(np.int64)
        out.append(Contender("hnswlib", f"hnswlib (M=16, ef_construction={EF_CONSTRUCTION})", hl_search,
                             [10, 16, 24, 32, 48, 64, 96, 128, 192], "ef", build_s=b_s, memory_mb=mem))
    if want("usearch"):
        log("building usearch (connectivity 16, f32)")

        def make_usearch() -> Any:
            index = usearch.index.Index(ndim=dim, metric="ip", dtype="f32", connectivity=16,
                                        expansion_add=EF_CONSTRUCTION)
            index.add(ids, base, threads=build_threads)
            return index
        us, b_s, mem = _timed_build(make_usearch)

        def us_search(q: np.ndarray, ef: int) -> np.ndarray:
            us.expansion_search = ef
            return np.asarray(us.search(q, K, threads=1).keys, np.int64).reshape(len(q), K)
        out.append(Contender("usearch", f"usearch (connectivity 16, expansion_add {EF_CONSTRUCTION}, float32)",
                             us_search,
                             [10, 16, 24, 32, 48, 64, 96, 128, 192], "expansion_search", build_s=b_s,
                             memory_mb=mem))
    if want("annoy"):
        log(f"building Annoy (dot, {ARCFACE_TREES} trees)")

        def make_annoy() -> Any:
            index = annoy.AnnoyIndex(dim, "dot")
            for i, v in enumerate(base):
                index.add_item(i, v)
            index.build(ARCFACE_TREES, n_jobs=build_threads)
            return index
        an, b_s, mem = _timed_build(make_annoy)

        def an_search(q: np.ndarray, search_k: int) -> np.ndarray:
            return np.array([an.get_nns_by_vector(v, K, search_k=search_k) for v in q], np.int64)
        out.append(Contender("annoy", f"ArcFace project's Annoy (dot, {ARCFACE_TREES} trees), default search_k",
                             an_search, [-1], "search_k", build_s=b_s, memory_mb=mem))
        out.append(Contender("annoy-tuned", "the same Annoy forest, search_k raised to reach the target",
                             an_search, [2_000, 5_000, 10_000, 20_000, 40_000, 80_000], "search_k", build_s=b_s))
    if want("df-naive") or want("df-kmeans"):
        log(f"deep-fashion-retrieval: naive scan and k-means ({DF_CLUSTERS} clusters) on {len(feats):,} x {DF_DIM}")
        out.append(Contender("df-naive", "deep-fashion-retrieval naive query (cdist over all, argpartition)",
                             lambda q, _: _df_query(q, feats, np.arange(len(feats))), [None], "-", space="l2-512",
                             embed="resnet50"))
        km, b_s, mem = _timed_build(lambda: KMeans(DF_CLUSTERS, random_state=0, n_init=1).fit(feats))

        def df_kmeans(q: np.ndarray, _: Any) -> np.ndarray:
            label = km.predict(q)
            members = np.where(km.labels_ == label)[0]
            return _df_query(q, feats[members], members)
        out.append(Contender("df-kmeans", f"deep-fashion-retrieval k-means query ({DF_CLUSTERS} clusters)",
                             df_kmeans, [None], "-", space="l2-512", embed="resnet50", build_s=b_s, memory_mb=mem))
    faiss.omp_set_num_threads(1)
    return out


def _exact(ids: np.ndarray, base: np.ndarray) -> Any:
    index = make_index("exact", base.shape[1])
    index.add(ids, base)
    return index


def _df_query(q: np.ndarray, feats: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """deep-fashion-retrieval's query: Euclidean distances to every candidate, argpartition, best first."""
    dist = cdist(q, feats)[0]
    top = np.argpartition(dist, K)[:K]
    return rows[top[np.argsort(dist[top])]][None]


# --- measurement ------------------------------------------------------------------------------


def sweep(c: Contender, queries: np.ndarray, base: np.ndarray, truth_scores: np.ndarray,
          df_queries: np.ndarray, df_truth: np.ndarray, target: float, sweep_queries: int) -> None:
    """Recall of each setting on ``sweep_queries`` queries; choose the first that reaches ``target``
    (the last one if none does)."""
    qs = df_queries if c.space == "l2-512" else queries
    qs = qs[:sweep_queries if len(c.settings) > 1 else min(sweep_queries, SINGLE_SETTING_QUERIES)]
    for setting in c.settings:
        found = np.concatenate([c.search(q[None], setting) for q in qs])
        if c.space == "l2-512":
            recall = float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, df_truth, strict=False)]))
        else:
            recall = knn_recall(found, qs, base, truth_scores[:len(qs)], K)
        c.sweep.append({"setting": setting, "recall": recall})
        c.chosen, c.recall = setting, recall
        if recall >= target:
            break


def time_rounds(fns: dict[str, Callable[[int], None]], rounds: int, seed: int,
                preempted: dict[str, list[bool]] | None = None) -> dict[str, list[float]]:
    """Milliseconds per call of each ``fn(i)``, for i in range(rounds); every round calls each once,
    in a shuffled order. ``preempted`` receives, per call, whether the kernel took the core away
    from this process meanwhile (an involuntary context switch: another process's time slice)."""
    rng = np.random.default_rng(seed)
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for j in rng.permutation(len(names)):
            switches = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
            t = time.perf_counter()
            fns[names[j]](i)
            times[names[j]].append((time.perf_counter() - t) * 1000)
            if preempted is not None:
                taken = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw > switches
                preempted.setdefault(names[j], []).append(taken)
    return times


def load_images(path: Path, count: int) -> list[bytes]:
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if is_image_name(n) and not n.startswith("__MACOSX")]
        return [archive.read(n) for n in names[:count]]


def p50(values: list[float]) -> float:
    return float(np.median(values))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--like", required=True,
                    help="collection folder (or .npy of embeddings) the generated vectors are fitted to, e.g. one "
                         "made by `vestis index ../shared/datasets/fashion-product-images-300.zip -c fpi300`")
    ap.add_argument("--n", type=int, default=139_709)
    ap.add_argument("--images", type=Path, default=ROOT.parent / "shared/datasets/fashion-product-images-300.zip",
                    help="zip of JPEGs to time the encoders on (default: ../shared/datasets/"
                         "fashion-product-images-300.zip beside the repository)")
    ap.add_argument("--embed-runs", type=int, default=40)
    ap.add_argument("--search-runs", type=int, default=300)
    ap.add_argument("--sweep-queries", type=int, default=300)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for the encoders")
    ap.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", help="comma-separated contenders (default: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/peers")
    args = ap.parse_args()
    started = time.time()
    load = os.getloadavg()

    dataset = prepare_dataset("generated", n=args.n, like=args.like, queries=1000, k=K,
                              threads=args.build_threads, log=log)
    base_mm, queries, _, truth_scores = dataset.arrays()
    base = np.ascontiguousarray(base_mm)
    projection = np.random.default_rng(7).standard_normal((base.shape[1], DF_DIM)).astype(np.float32)
    feats, df_queries = base @ projection, queries @ projection
    flat = faiss.IndexFlatL2(DF_DIM)  # exact Euclidean ground truth on deep-fashion's features, by BLAS
    flat.add(feats)
    df_truth = flat.search(df_queries[:args.sweep_queries], K)[1]
    del flat

    only = set(args.only.split(",")) if args.only else None
    contenders = build_contenders(base, feats, args.build_threads, log, only)
    with threadpool_limits(1):
        for c in contenders:
            sweep(c, queries, base, truth_scores, df_queries, df_truth, args.target, args.sweep_queries)
            log(f"{c.name}: {c.param}={c.chosen} recall@10 {c.recall:.3f} (build {c.build_s:.0f} s)")

        log(f"timing {args.search_runs} single-query searches per contender, interleaved")
        nq = len(queries)
        fns = {c.name: (lambda i, c=c: c.search((df_queries if c.space == "l2-512" else queries)[i % nq][None],
                                                c.chosen))
               for c in contenders}
        preempted: dict[str, list[bool]] = {}
        search_ms = time_rounds(fns, args.search_runs, seed=1, preempted=preempted)

    log(f"timing {args.embed_runs} embeds per encoder, interleaved ({args.threads} threads)")
    torch.set_num_threads(args.threads)
    encoder = get_encoder("efficientnet-lite0", threads=args.threads)
    net = resnet50_features()
    images = load_images(args.images, args.embed_runs)
    decoded = [decode_image(data) for data in images]

    def embed_vestis(i: int) -> None:
        encoder.embed_batch(encoder.preprocess(decoded[i % len(decoded)])[None])

    def embed_resnet(i: int) -> None:
        with torch.inference_mode():
            net(torchvision_preprocess(decoded[i % len(decoded)]))

    for i in range(3):  # warm-up: first runs allocate
        embed_vestis(i)
        embed_resnet(i)
    decode_ms = time_rounds({"decode": lambda i: decode_image(images[i % len(images)])}, args.embed_runs, 2)["decode"]
    embed_ms = time_rounds({"vestis": embed_vestis, "resnet50": embed_resnet}, args.embed_runs, seed=3)

    result = report(contenders, search_ms, preempted, embed_ms, decode_ms, dataset.meta, args, load, started)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.out / "results.md").write_text(result["markdown"])
    print(result["markdown"])


def report(contenders: list[Contender], search_ms: dict[str, list[float]], preempted: dict[str, list[bool]],
           embed_ms: dict[str, list[float]], decode_ms: list[float], meta: dict[str, Any], args: argparse.Namespace, load: tuple[float, ...],
           started: float) -> dict[str, Any]:
    decode = p50(decode_ms)
    embed = {name: p50(v) for name, v in embed_ms.items()}
    ref = next(c for c in contenders if c.name == "vestis") if any(c.name == "vestis" for c in contenders) else None
    ref_search = p50(search_ms["vestis"]) if ref else float("nan")
    ref_total = decode + embed["vestis"] + ref_search
    rows = []
    for c in contenders:
        s = p50(search_ms[c.name])
        e = embed.get(c.embed) if c.embed else None
        total = decode + e + s if e is not None else None
        taken = np.array(preempted[c.name])
        own = np.array(search_ms[c.name])[~taken]  # the calls no other process interrupted
        rows.append({"name": c.name, "what": c.what, "param": c.param, "setting": c.chosen, "recall": c.recall,
                     "search_p50_ms": s, "search_p99_ms": float(np.percentile(search_ms[c.name], 99)),
                     "search_p99_unpreempted_ms": float(np.percentile(own, 99)) if len(own) else None,
                     "preempted_calls": int(taken.sum()),
                     "embed_p50_ms": e, "total_p50_ms": total, "build_s": c.build_s, "memory_mb": c.memory_mb,
                     "sweep": c.sweep,
                     "ratio": {"embed": e / embed["vestis"] if e else None, "search": s / ref_search,
                               "total": total / ref_total if total else None}})

    def f(v: float | None, digits: int = 2, suffix: str = "") -> str:
        return "–" if v is None else f"{v:,.{digits}f}{suffix}"
    lines = [f"Search data: **{meta['label']}** ({meta['description']}); deep-fashion-retrieval's 512-d "
             "features are a fixed random projection of them. Embed: real JPEGs of "
             f"{args.images.name}, decode p50 {decode:.2f} ms (shared by every pipeline). Search: 1 thread, "
             f"{args.search_runs} single queries per contender, interleaved; embed: {args.threads} threads, "
             f"{args.embed_runs} images, interleaved. Load average at the start {load[0]:.1f}; "
             f"run took {(time.time() - started) / 60:.0f} min. CPU: {describe_cpu()}. p99 own: the 99th percentile of the "
             "calls no other process interrupted (no involuntary context switch); preempted: how many were.", "",
             "| contender | setting | recall@10 | embed p50 ms | search p50 ms | search p99 ms | p99 own ms "
             "| preempted | total p50 ms | embed / vestis | search / vestis | total / vestis | build s | memory MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        values = r["setting"] if isinstance(r["setting"], tuple) else (r["setting"],)
        setting = "–" if r["setting"] is None else ", ".join(
            f"{name}={v}" for name, v in zip(r["param"].split(","), values, strict=True))
        lines.append(f"| {r['what']} | {setting} | {r['recall']:.3f} | {f(r['embed_p50_ms'], 1)} | "
                     f"{f(r['search_p50_ms'], 3)} | {f(r['search_p99_ms'], 3)} | {f(r['search_p99_unpreempted_ms'], 3)} | "
                     f"{r['preempted_calls']} | {f(r['total_p50_ms'], 1)} | "
                     f"{f(r['ratio']['embed'], 2, 'x')} | {f(r['ratio']['search'], 2, 'x')} | "
                     f"{f(r['ratio']['total'], 2, 'x')} | {f(r['build_s'], 0)} | {f(r['memory_mb'], 0)} |")
    return {"rows": rows, "decode_p50_ms": decode, "embed_p50_ms": embed, "dataset": meta,
            "load_average": load, "load_average_end": os.getloadavg(),
            "machine": {"cpus": os.cpu_count(), "cpu": describe_cpu(), "platform": platform.platform()},
            "args": {k: str(v) for k, v in vars(args).items()}, "markdown": "\n".join(lines) + "\n"}


if __name__ == "__main__":
    main()
