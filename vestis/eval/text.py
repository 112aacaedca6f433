"""Text-query protocols (``vestis eval --text``): how well words find the right photos.

All queries search the test items of the split by id (never seen in training or model selection);
the choices the searcher makes by measurement (the hybrid fusion, the text weight of composed
queries) are made on the validation split and then applied to the test split.

1. **Title retrieval**: every distinct test title queries the test items; relevant = the items
   with that exact title. R@1, R@10 for keyword, vector and hybrid search.
2. **Label queries**: every (baseColour, articleType) and (gender, articleType) pair with at least
   ``min_items`` test items, phrased in the titles' own words ("navy blue shirt", "men shirt")
   and paraphrased with words the titles rarely use ("a button-down in navy", "button-down for
   guys"); relevant = the items with both labels. mAP@10 and P@10 per mode.
3. **Composed queries**: a test image of type A in colour C plus the words of another colour C'
   ("in red"); relevant = items of A in C'. P@10 of the image alone, the text alone and both.
4. **Transfer** (``transfer`` collection, e.g. the Clothing Attribute Dataset): category and colour
   phrases over photos the model never saw; P@10 per label value, beside the rate of the label.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vestis.errors import VestisError
from vestis.eval.protocols import rank, score_ranking
from vestis.eval.report import markdown_table, write_report
from vestis.eval.run import EvalConfig, resolve_split
from vestis.search.text import DEFAULT_FUSION, DEFAULT_KEYWORD_WEIGHT, MODES, TextQuery, TextSearcher, compose
from vestis.store.collection import Collection, Item

# words for the paraphrased label queries: types, colours and genders as a shopper might say them
PARAPHRASED_TYPES = {
    "Tshirts": "tee", "Shirts": "button-down", "Casual Shoes": "everyday footwear", "Watches": "wristwatch",
    "Sports Shoes": "trainers", "Kurtas": "ethnic tunic", "Tops": "blouse", "Handbags": "purse",
    "Heels": "stilettos", "Sunglasses": "shades", "Wallets": "billfold", "Flip Flops": "beach slippers",
    "Sandals": "open-toe footwear", "Briefs": "underpants", "Belts": "waist strap", "Backpacks": "rucksack",
    "Socks": "hosiery", "Formal Shoes": "oxfords", "Perfume and Body Mist": "fragrance", "Jeans": "denim pants",
    "Shorts": "bermudas", "Trousers": "slacks", "Flats": "ballerinas", "Bra": "brassiere", "Dresses": "frock",
    "Sarees": "sari", "Earrings": "ear studs", "Deodorant": "antiperspirant", "Nail Polish": "nail varnish",
    "Lipstick": "lip colour", "Track Pants": "joggers", "Clutches": "evening bag", "Sweatshirts": "pullover",
    "Caps": "baseball hat", "Sweaters": "jumper", "Ties": "necktie", "Jackets": "coat",
    "Innerwear Vests": "undershirt", "Kurtis": "short ethnic tunic", "Tunics": "long top",
    "Nightdress": "nightgown", "Leggings": "tights", "Capris": "cropped pants", "Skirts": "midi",
    "Scarves": "muffler", "Night suits": "pyjamas", "Trunk": "swim trunks", "Boxers": "boxer shorts",
}
PARAPHRASED_COLOURS = {"Navy Blue": "navy", "Grey": "gray", "Grey Melange": "heather gray", "Off White": "ivory",
                       "Multi": "multicoloured", "Charcoal": "dark gray", "Steel": "steel gray"}
PARAPHRASED_GENDERS = {"Men": "guys", "Women": "ladies", "Boys": "a boy", "Girls": "a girl", "Unisex": "anyone"}
# Clothing Attribute Dataset label values -> the phrase queried
TRANSFER_CATEGORIES = {"shirt": "shirt", "sweater": "sweater", "t-shirt": "t-shirt", "outerwear": "jacket",
                       "suit": "suit", "tank top": "tank top", "dress": "dress"}
TRANSFER_COLOURS = {"many_colors": "multicoloured clothes"}
LABEL_PAIRS = (("baseColour", "articleType"), ("gender", "articleType"))


@dataclass
class TextEvalConfig:
    split_file: Path | None = None  # default: the split by id over `group` (as vestis train makes it)
    group: list[str] = field(default_factory=lambda: ["articleType", "baseColour"])
    title_column: str | None = None  # default: the joint model's title column
    min_items: int = 5
    composed_queries: int = 300
    text_weights: list[float] = field(default_factory=lambda: [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    keyword_weights: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.5, 0.7])
    transfer: Path | None = None
    latency_queries: int = 50
    seed: int = 0


def singular(word: str) -> str:
    """A label's singular as titles write it ("Watches" -> "Watch", "Tshirts" -> "Tshirt")."""
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def own_word(article_type: str, titles: Sequence[str]) -> str:
    """The form of ``article_type`` (as labelled, or singular) that its items' titles use most."""
    forms = [article_type, singular(article_type)]
    counts = [sum(f.lower() in t.lower() for t in titles) for f in forms]
    return forms[int(np.argmax(counts))].lower()


def phrase(kind: tuple[str, str], first: str, article_type: str, word: str, paraphrased: bool) -> str | None:
    """The query text of a label pair; None when the type has no paraphrase."""
    if not paraphrased:
        return f"{first.lower()} {word}"
    synonym = PARAPHRASED_TYPES.get(article_type)
    if synonym is None:
        return None
    if kind[0] == "gender":
        return f"{synonym} for {PARAPHRASED_GENDERS.get(first, first.lower())}"
    article = "an" if synonym[0] in "aeiou" else "a"
    return f"{article} {synonym} in {PARAPHRASED_COLOURS.get(first, first.lower())}"


class Gallery:
    """The items of one split: vids, their positions, and scoring of vid rankings."""

    def __init__(self, items: list[Item]):
        self.items = items
        self.vids = np.array([it.vid for it in items], np.int64)
        self.position = {v: i for i, v in enumerate(self.vids.tolist())}

    def positions(self, rankings: list[np.ndarray], depth: int) -> np.ndarray:
        out = np.full((len(rankings), depth), -1, np.int64)
        for i, vids in enumerate(rankings):
            row = [self.position[v] for v in vids.tolist()[:depth]]
            out[i, :len(row)] = row
        return out

    def score(self, rankings: list[np.ndarray], query_labels: Sequence[Any], gallery_labels: Sequence[Any],
              ks: Sequence[int]) -> dict[str, float | int]:
        ranking = self.positions(rankings, max(ks))
        return score_ranking(ranking, np.array(query_labels, dtype=object), np.array(gallery_labels, dtype=object),
                             ks, include_queries_without_relevant=True)


def _queries(searcher: TextSearcher, texts: list[str], mode: str) -> list[TextQuery]:
    """Text queries of one mode, the texts embedded in one batch."""
    if mode == "keyword":
        return [TextQuery(t) for t in texts]
    vectors = searcher.model.embed_text(texts)
    return [TextQuery(t if mode == "hybrid" else None, v) for t, v in zip(texts, vectors)]


def _rankings(searcher: TextSearcher, queries: list[TextQuery], gallery: Gallery, depth: int,
              fusion: str = DEFAULT_FUSION, keyword_weight: float = DEFAULT_KEYWORD_WEIGHT) -> list[np.ndarray]:
    return [searcher.ranking(q, depth, gallery.vids, fusion, keyword_weight)[0] for q in queries]


def title_retrieval(searcher: TextSearcher, gallery: Gallery, column: str, fusion: tuple[str, float]
                    ) -> dict[str, Any]:
    titles = [it.metadata.get(column) for it in gallery.items]
    queries = sorted({t for t in titles if t})
    if not queries:
        raise VestisError(f"no test item has a {column!r} title")
    out: dict[str, Any] = {"n_queries": len(queries)}
    for mode in MODES:
        rankings = _rankings(searcher, _queries(searcher, queries, mode), gallery, 10, *fusion)
        scores = gallery.score(rankings, queries, titles, [1, 10])
        out[mode] = {"R@1": scores["R@1"], "R@10": scores["R@10"]}
    return out


def label_query_sets(gallery: Gallery, min_items: int) -> dict[str, tuple[list[str], list[str], list[Any]]]:
    """(query texts, query labels, gallery labels) for each pair kind and phrasing."""
    sets = {}
    for kind in LABEL_PAIRS:
        labels = [(str(it.metadata.get(kind[0])), str(it.metadata.get(kind[1])))
                  if it.metadata.get(kind[0]) and it.metadata.get(kind[1]) else None for it in gallery.items]
        counts = Counter(pair for pair in labels if pair is not None)
        titles_by_type: dict[str, list[str]] = defaultdict(list)
        for it in gallery.items:
            titles_by_type[str(it.metadata.get(kind[1]))].append(str(it.metadata.get("productDisplayName", "")))
        pairs = sorted(p for p, n in counts.items() if n >= min_items)
        gallery_labels = ["|".join(pair) if pair else None for pair in labels]
        for paraphrased in (False, True):
            texts, query_labels = [], []
            for first, article_type in pairs:
                text = phrase(kind, first, article_type, own_word(article_type, titles_by_type[article_type]),
                              paraphrased)
                if text is not None:
                    texts.append(text)
                    query_labels.append(f"{first}|{article_type}")
            name = f"{'+'.join(kind)}/{'paraphrase' if paraphrased else 'own words'}"
            sets[name] = (texts, query_labels, gallery_labels)
    return sets


def label_queries(searcher: TextSearcher, gallery: Gallery, sets: dict, fusion: tuple[str, float],
                  modes: Sequence[str] = MODES) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (texts, query_labels, gallery_labels) in sets.items():
        out[name] = {"n_queries": len(texts), "examples": texts[:3]}
        for mode in modes:
            rankings = _rankings(searcher, _queries(searcher, texts, mode), gallery, 10, *fusion)
            scores = gallery.score(rankings, query_labels, gallery_labels, [10])
            out[name][mode] = {"mAP@10": scores["mAP@10"], "P@10": scores["P@10"]}
    return out


def choose_fusion(searcher: TextSearcher, gallery: Gallery, sets: dict, keyword_weights: Sequence[float]
                  ) -> tuple[tuple[str, float], dict[str, float]]:
    """The hybrid fusion with the best mean P@10 over the label query sets of ``gallery``."""
    candidates = [("rrf", 0.0)] + [("weighted", w) for w in keyword_weights]
    results = {}
    for fusion in candidates:
        scores = label_queries(searcher, gallery, sets, fusion, modes=("hybrid",))
        results[f"{fusion[0]}" + (f" w={fusion[1]}" if fusion[0] == "weighted" else "")] = float(
            np.mean([s["hybrid"]["P@10"] for s in scores.values() if s["n_queries"]]))
    best = max(range(len(candidates)), key=lambda i: list(results.values())[i])
    return candidates[best], results


def composed_queries(searcher: TextSearcher, gallery: Gallery, n: int, weights: Sequence[float], seed: int,
                     min_items: int) -> dict[str, Any]:
    """P@10 of image only, text only and image + text for each text weight (see the module doc)."""
    meta = [it.metadata for it in gallery.items]
    pair = [(m.get("articleType"), m.get("baseColour")) for m in meta]
    counts = Counter(p for p in pair if all(p))
    colours_of: dict[str, list[str]] = defaultdict(list)
    for (a, c), count in sorted(counts.items()):
        if count >= min_items:
            colours_of[a].append(c)
    rng = np.random.default_rng(seed)
    candidates = [i for i, (a, c) in enumerate(pair) if a in colours_of and set(colours_of[a]) - {c}]
    chosen = rng.permutation(candidates)[:n].tolist()
    if not chosen:
        return {"n_queries": 0}
    targets = [str(rng.choice(sorted(set(colours_of[pair[i][0]]) - {pair[i][1]}))) for i in chosen]
    texts = [f"in {c.lower()}" for c in targets]
    text_vecs = searcher.model.embed_text(texts)
    image_vecs = [searcher.index.stored_vectors(gallery.items[i].vid)[0] for i in chosen]
    query_labels = [f"{pair[i][0]}|{c}" for i, c in zip(chosen, targets)]
    gallery_labels = [f"{a}|{c}" if a and c else None for a, c in pair]
    out: dict[str, Any] = {"n_queries": len(chosen), "examples": [
        f"{meta[i].get('productDisplayName')} + '{t}'" for i, t in zip(chosen[:3], texts[:3])]}
    for weight in [0.0, *weights, 1.0]:
        rankings = [searcher.ranking(TextQuery(None, compose(t, [(1.0, v)], text_weight=weight),
                                               exclude=(gallery.items[i].vid,)), 10, gallery.vids)[0]
                    for t, v, i in zip(text_vecs, image_vecs, chosen)]
        label = {0.0: "image only", 1.0: "text only"}.get(weight, f"text weight {weight}")
        out[label] = gallery.score(rankings, query_labels, gallery_labels, [10])["P@10"]
    return out


def transfer(searcher: TextSearcher, path: Path) -> dict[str, Any]:
    """The joint model over another collection's photos (same image encoder), queried by phrases."""
    with Collection.open(path) as other:
        other.check_encoder(searcher.model.image_encoder_version)
        items = list(other.iter_items())
        table = other.table()
        vectors = searcher.model.embed_image_features(table.vectors[table.rows_of(np.array([it.vid for it in items]))])
    out: dict[str, Any] = {"n_items": len(items)}
    for column, phrases in (("category", TRANSFER_CATEGORIES), ("colour", TRANSFER_COLOURS)):
        values = sorted({str(it.metadata[column]) for it in items if it.metadata.get(column)})
        if not values:
            continue
        labels = np.array([str(it.metadata.get(column)) if it.metadata.get(column) else None for it in items],
                          dtype=object)
        texts = [phrases.get(v, f"{v.replace('_', ' ')} clothes" if column == "colour" else v) for v in values]
        ranking = rank(searcher.model.embed_text(texts), vectors, 10)[1]
        per_value = {}
        for value, text, row in zip(values, texts, ranking):
            hits = float(np.mean(labels[row] == value))
            per_value[value] = {"query": text, "P@10": hits, "label rate": float(np.mean(labels == value))}
        out[column] = {"mean P@10": float(np.mean([v["P@10"] for v in per_value.values()])), "values": per_value}
    return out


def latency(searcher: TextSearcher, texts: list[str], fusion: tuple[str, float]) -> dict[str, float]:
    """p50 of embedding a text query and of a hybrid search over the whole collection (ms)."""
    embed, search = [], []
    searcher.ranking(TextQuery(texts[0], searcher.model.embed_text(texts[0])[0]), 10)  # warm caches
    for text in texts:
        t0 = time.perf_counter()
        vector = searcher.model.embed_text(text)[0]
        t1 = time.perf_counter()
        searcher.ranking(TextQuery(text, vector), 10, None, *fusion)
        t2 = time.perf_counter()
        embed.append((t1 - t0) * 1000)
        search.append((t2 - t1) * 1000)
    return {"embed p50 ms": float(np.median(embed)), "hybrid search p50 ms": float(np.median(search)),
            "queries": len(texts), "items": len(searcher.collection)}


def run_text_eval(collection_dir: Path, cfg: TextEvalConfig, *, report_dir: Path | None, command: str,
                  progress: Callable[[str], None] = lambda _msg: None) -> dict[str, Any]:
    """Every protocol of the module docstring; writes report.md + metrics.json when ``report_dir``."""
    with Collection.open(collection_dir) as collection:
        searcher = TextSearcher.open(collection)
        if searcher.model is None:
            raise VestisError(f"{collection_dir} has no joint text-image model: add one with `vestis text build`")
        items = sorted(collection.iter_items(), key=lambda it: it.vid)
        split = resolve_split(collection, items, EvalConfig(group=cfg.group, split_file=cfg.split_file))
        test = Gallery([it for it in items if split.get(it.id) == "test"])
        val = Gallery([it for it in items if split.get(it.id) == "val"])
        if not test.items or not val.items:
            raise VestisError("the split has no test or no validation items")
        column = cfg.title_column or searcher.model.meta.get("text", {}).get("column")
        metrics: dict[str, Any] = {"collection": str(collection_dir), "joint_model": searcher.model.version,
                                   "n_test": len(test.items), "n_val": len(val.items)}
        progress("choosing the hybrid fusion on the validation split")
        fusion, metrics["fusion (validation mean P@10)"] = choose_fusion(
            searcher, val, label_query_sets(val, cfg.min_items), cfg.keyword_weights)
        metrics["fusion"] = {"kind": fusion[0], "keyword_weight": fusion[1]}
        if column:
            progress("title retrieval")
            metrics["title retrieval"] = title_retrieval(searcher, test, column, fusion)
        progress("label queries")
        sets = label_query_sets(test, cfg.min_items)
        metrics["label queries"] = label_queries(searcher, test, sets, fusion)
        progress("composed queries (text weight chosen on validation)")
        on_val = composed_queries(searcher, val, cfg.composed_queries, cfg.text_weights, cfg.seed, cfg.min_items)
        best = max(cfg.text_weights, key=lambda w: on_val.get(f"text weight {w}", -1))
        metrics["composed (validation)"] = on_val
        metrics["composed"] = {"text weight": best, **composed_queries(
            searcher, test, cfg.composed_queries, [best], cfg.seed, cfg.min_items)}
        if cfg.transfer is not None:
            progress("transfer")
            metrics["transfer"] = transfer(searcher, cfg.transfer)
        progress("latency")
        texts = [t for texts, _q, _g in sets.values() for t in texts][: cfg.latency_queries]
        metrics["latency"] = latency(searcher, texts, fusion)
    if report_dir is not None:
        write_text_report(report_dir, metrics, command)
    return metrics


def write_text_report(out_dir: Path, metrics: dict[str, Any], command: str) -> Path:
    """report.md (tables) and metrics.json, through the common report writer."""
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    path = write_report(out_dir, scalars, title=f"vestis eval --text: {Path(metrics['collection']).name}",
                        command=command)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    md = [path.read_text()]
    fusion = metrics["fusion"]
    md += ["## Hybrid fusion (chosen on the validation split, mean P@10 of label queries)", ""]
    md += markdown_table(["fusion", "P@10"], list(metrics["fusion (validation mean P@10)"].items()))
    md += [f"Chosen: {fusion['kind']}" + (f", keyword weight {fusion['keyword_weight']}"
                                          if fusion["kind"] == "weighted" else ""), ""]
    if "title retrieval" in metrics:
        t = metrics["title retrieval"]
        md += [f"## Title retrieval ({t['n_queries']} distinct test titles)", ""]
        md += markdown_table(["mode", "R@1", "R@10"], [[m, t[m]["R@1"], t[m]["R@10"]] for m in MODES])
    md += ["## Label queries (mAP@10 / P@10)", ""]
    rows = []
    for name, r in metrics["label queries"].items():
        rows.append([name, r["n_queries"], "; ".join(r["examples"])]
                    + [f"{r[m]['mAP@10']:.3f} / {r[m]['P@10']:.3f}" for m in MODES])
    md += markdown_table(["queries", "n", "examples", *MODES], rows)
    c = metrics["composed"]
    md += [f"## Composed queries (P@10, {c.get('n_queries', 0)} test queries, text weight {c['text weight']} "
           "chosen on validation)", ""]
    md += markdown_table(["query", "P@10"], [[k, v] for k, v in c.items() if isinstance(v, float)])
    if "transfer" in metrics:
        tr = metrics["transfer"]
        md += [f"## Transfer to {tr['n_items']} photos of another collection (P@10 per label value)", ""]
        for column in ("category", "colour"):
            if column in tr:
                md += [f"### {column} (mean P@10 {tr[column]['mean P@10']:.3f})", ""]
                md += markdown_table(["value", "query", "P@10", "label rate"],
                             [[v, r["query"], r["P@10"], r["label rate"]] for v, r in tr[column]["values"].items()])
    lat = metrics["latency"]
    md += ["## Latency", ""] + markdown_table(["measure", "value"], list(lat.items()))
    path.write_text("\n".join(md))
    return path

