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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vestis.errors import VestisError
from vestis.eval.protocols import rank, score_ranking
from vestis.eval.report import markdown_table, write_report
from vestis.eval.run import EvalConfig, resolve_split
from vestis.eval.shop_words import read_shop_queries, score_shop_queries
from vestis.search.text import LABEL_SPACES, MODES, Fusion, TextQuery, TextSearcher, compose
from vestis.search.understand import Understanding, singular
from vestis.store.collection import Item
from vestis.store.factory import open_collection

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
    keyword_weights: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.5, 0.7, 0.9])
    # reading label values in the query: least similarity, margin, bonus weight (grid on validation)
    label_similarities: list[float] = field(default_factory=lambda: [0.4, 0.5, 0.6, 0.7])
    label_spaces: list[str] = field(default_factory=lambda: list(LABEL_SPACES))
    label_margins: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1])
    label_weights: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.5, 1.0])
    transfer: Path | None = None
    shop_queries: Path | None = None  # held-out shop-word queries (vestis.eval.shop_words)
    latency_queries: int = 50
    seed: int = 0


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


Reading = tuple[float, float, str]  # (least similarity, margin, space) of reading label values in a query
NO_READING: Reading = (2.0, 0.0, "text")  # a similarity nothing reaches: no label values read


def _queries(searcher: TextSearcher, texts: list[str], mode: str, reading: Reading = NO_READING
             ) -> list[TextQuery]:
    """Text queries of one mode, the texts embedded in one batch; hybrid ones read with ``reading``."""
    if mode == "keyword":
        return [TextQuery(t) for t in texts]
    vectors = searcher.model.embed_text([searcher.keywords.rewrite(t).canonical for t in texts])
    if mode != "hybrid":
        return [TextQuery(None, v) for v in vectors]
    return [TextQuery(t, v, labels=searcher.understand(t, *reading) if reading != NO_READING else Understanding())
            for t, v in zip(texts, vectors)]


def _narrowed(queries: list[TextQuery], reading: Reading) -> list[TextQuery]:
    """The queries with what a narrower ``reading`` would have read (see Understanding.narrowed)."""
    return [replace(q, labels=q.labels.narrowed(*reading[:2])) for q in queries]


def _rankings(searcher: TextSearcher, queries: list[TextQuery], gallery: Gallery, depth: int,
              fusion: Fusion = Fusion()) -> list[np.ndarray]:
    return [searcher.ranking(q, depth, gallery.vids, fusion)[0] for q in queries]


def title_retrieval(searcher: TextSearcher, gallery: Gallery, column: str, fusion: Fusion, reading: Reading
                    ) -> dict[str, Any]:
    titles = [it.metadata.get(column) for it in gallery.items]
    queries = sorted({t for t in titles if t})
    if not queries:
        raise VestisError(f"no test item has a {column!r} title")
    out: dict[str, Any] = {"n_queries": len(queries)}
    for mode in MODES:
        rankings = _rankings(searcher, _queries(searcher, queries, mode, reading), gallery, 10, fusion)
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


def label_queries(searcher: TextSearcher, gallery: Gallery, sets: dict, fusion: Fusion, reading: Reading,
                  modes: Sequence[str] = MODES) -> dict[str, Any]:
    """mAP@10 and P@10 per query set and mode; ``hybrid, no label reading`` beside it when ``reading``
    reads labels."""
    out: dict[str, Any] = {}
    for name, (texts, query_labels, gallery_labels) in sets.items():
        out[name] = {"n_queries": len(texts), "examples": texts[:3]}
        if not texts:
            continue
        runs = [(m, _queries(searcher, texts, m, reading)) for m in modes]
        if reading != NO_READING and "hybrid" in modes:
            runs.append(("hybrid, no label reading", _queries(searcher, texts, "hybrid")))
        for mode, queries in runs:
            rankings = _rankings(searcher, queries, gallery, 10, fusion)
            scores = gallery.score(rankings, query_labels, gallery_labels, [10])
            out[name][mode] = {"mAP@10": scores["mAP@10"], "P@10": scores["P@10"]}
        if reading != NO_READING and "hybrid" in modes:
            out[name]["read"] = [f"{q.text}: {q.labels.describe() or '-'}" for q in runs[modes.index("hybrid")][1][:3]]
    return out


def _mean_p10(searcher: TextSearcher, gallery: Gallery, query_sets: list[tuple[list[TextQuery], list, list]],
              fusion: Fusion) -> float:
    return float(np.mean([gallery.score(_rankings(searcher, queries, gallery, 10, fusion), query_labels,
                                        gallery_labels, [10])["P@10"]
                          for queries, query_labels, gallery_labels in query_sets if queries]))


def choose_fusion(searcher: TextSearcher, gallery: Gallery, sets: dict, cfg: TextEvalConfig
                  ) -> tuple[Fusion, Reading, dict[str, float]]:
    """The hybrid fusion, then the label reading (space, least similarity, margin) and its bonus weight,
    each with the best mean P@10 over the label query sets of ``gallery`` (the validation split)."""
    results: dict[str, float] = {}
    plain = [(_queries(searcher, texts, "hybrid"), q, g) for texts, q, g in sets.values()]
    candidates = [Fusion("rrf")] + [Fusion("weighted", w, 0.0) for w in cfg.keyword_weights]
    for fusion in candidates:
        results[fusion.describe()] = _mean_p10(searcher, gallery, plain, fusion)
    fusion = max(candidates, key=lambda f: results[f.describe()])
    best: tuple[float, Fusion, Reading] = (results[fusion.describe()], fusion, NO_READING)
    for space in cfg.label_spaces:
        widest = (min(cfg.label_similarities), max(cfg.label_margins), space)
        read = [(_queries(searcher, texts, "hybrid", widest), q, g) for texts, q, g in sets.values()]
        for similarity in cfg.label_similarities:
            for margin in cfg.label_margins:
                narrowed = [(_narrowed(queries, (similarity, margin, space)), q, g) for queries, q, g in read]
                for weight in ([0.0] if fusion.kind == "rrf" else cfg.label_weights):
                    candidate = replace(fusion, label_weight=weight)
                    score = _mean_p10(searcher, gallery, narrowed, candidate)
                    results[f"{candidate.describe()} read in {space} >= {similarity} margin {margin}"] = score
                    if score > best[0]:
                        best = (score, candidate, (similarity, margin, space))
    return best[1], best[2], results


def composed_queries(searcher: TextSearcher, gallery: Gallery, n: int, weights: Sequence[float], seed: int,
                     min_items: int, fusion: Fusion, reading: Reading, hybrid_weights: Sequence[float] = ()
                     ) -> dict[str, Any]:
    """P@10 of image only, text only and image + text for each text weight (see the module doc):
    vector search over the composed vector (``weights``), and hybrid search (``hybrid_weights``:
    the composed vector, the words on the keyword side and the label values read in them)."""
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
    read = [searcher.understand(t, *reading) if reading != NO_READING else Understanding() for t in texts]
    runs = [(w, None) for w in [0.0, *weights, 1.0]] + [(w, "hybrid") for w in hybrid_weights]
    for weight, mode in runs:
        rankings = [searcher.ranking(TextQuery(t if mode else None, compose(tv, [(1.0, v)], text_weight=weight),
                                               exclude=(gallery.items[i].vid,), labels=r if mode else Understanding()),
                                     10, gallery.vids, fusion)[0]
                    for t, tv, v, i, r in zip(texts, text_vecs, image_vecs, chosen, read)]
        label = {0.0: "image only", 1.0: "text only"}.get(weight, f"text weight {weight}")
        out[f"hybrid, {label}" if mode else label] = gallery.score(rankings, query_labels, gallery_labels,
                                                                   [10])["P@10"]
    return out


def transfer(searcher: TextSearcher, path: Path) -> dict[str, Any]:
    """The joint model over another collection's photos (same image encoder), queried by phrases."""
    with open_collection(path) as other:
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


def latency(searcher: TextSearcher, texts: list[str], fusion: Fusion, reading: Reading) -> dict[str, float]:
    """p50 of embedding a text query, reading its label values and a hybrid search over the whole
    collection (ms)."""
    times: dict[str, list[float]] = {"embed": [], "read labels": [], "hybrid search": []}
    searcher.ranking(TextQuery(texts[0], searcher.model.embed_text(texts[0])[0]), 10)  # warm caches
    for text in texts:
        t0 = time.perf_counter()
        vector = searcher.embed_text(text)  # the words rewritten, then embedded
        t1 = time.perf_counter()
        labels = searcher.understand(text, *reading) if reading != NO_READING else Understanding()
        t2 = time.perf_counter()
        searcher.ranking(TextQuery(text, vector, labels=labels), 10, None, fusion)
        t3 = time.perf_counter()
        for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
            times[key].append(seconds * 1000)
    return {**{f"{k} p50 ms": float(np.median(v)) for k, v in times.items()},
            "queries": len(texts), "items": len(searcher.collection)}


def run_text_eval(collection_dir: Path, cfg: TextEvalConfig, *, report_dir: Path | None, command: str,
                  progress: Callable[[str], None] = lambda _msg: None) -> dict[str, Any]:
    """Every protocol of the module docstring; writes report.md + metrics.json when ``report_dir``."""
    with open_collection(collection_dir) as collection:
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
        val_sets = label_query_sets(val, cfg.min_items)
        if not any(texts for texts, _q, _g in val_sets.values()):
            raise VestisError(f"no label pair has {cfg.min_items} validation items: nothing to choose the hybrid "
                              "fusion on (lower --min-items)")
        progress("choosing the hybrid fusion and the label reading on the validation split")
        fusion, reading, metrics["fusion (validation mean P@10)"] = choose_fusion(searcher, val, val_sets, cfg)
        metrics["fusion"] = {"kind": fusion.kind, "keyword_weight": fusion.keyword_weight,
                             "label_weight": fusion.label_weight,
                             "label_similarity": reading[0] if reading != NO_READING else None,
                             "label_margin": reading[1] if reading != NO_READING else None,
                             "label_space": reading[2] if reading != NO_READING else None}
        if column:
            progress("title retrieval")
            metrics["title retrieval"] = title_retrieval(searcher, test, column, fusion, reading)
        progress("label queries")
        sets = label_query_sets(test, cfg.min_items)
        metrics["label queries"] = label_queries(searcher, test, sets, fusion, reading)
        progress("composed queries (mode and text weight chosen on validation)")
        composed = (cfg.composed_queries, cfg.seed, cfg.min_items, fusion, reading)
        on_val = composed_queries(searcher, val, cfg.composed_queries, cfg.text_weights, cfg.seed, cfg.min_items,
                                  fusion, reading, cfg.text_weights)
        best = max(cfg.text_weights, key=lambda w: on_val.get(f"text weight {w}", -1))
        best_hybrid = max(cfg.text_weights, key=lambda w: on_val.get(f"hybrid, text weight {w}", -1))
        metrics["composed (validation)"] = on_val
        metrics["composed"] = {
            "text weight": best, "hybrid text weight": best_hybrid,
            "mode chosen on validation": "hybrid" if on_val.get(f"hybrid, text weight {best_hybrid}", -1) > on_val.get(
                f"text weight {best}", -1) else "vector",
            **composed_queries(searcher, test, composed[0], [best], *composed[1:], [best_hybrid])}
        if cfg.shop_queries is not None:
            progress("shop-word queries")
            metrics["shop queries"] = score_shop_queries(searcher, read_shop_queries(cfg.shop_queries), test.items,
                                                         fusion, reading)
        if cfg.transfer is not None:
            progress("transfer")
            metrics["transfer"] = transfer(searcher, cfg.transfer)
        progress("latency")
        texts = [t for texts, _q, _g in (*sets.values(), *val_sets.values()) for t in texts][: cfg.latency_queries]
        metrics["latency"] = latency(searcher, texts, fusion, reading)
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
    md += [f"Chosen: {fusion['kind']}" + (f", keyword weight {fusion['keyword_weight']}, label weight "
                                          f"{fusion['label_weight']}" if fusion["kind"] == "weighted" else "")
           + (f"; label values read at similarity >= {fusion['label_similarity']}, margin {fusion['label_margin']}"
              + f" in the {fusion['label_space']} space" if fusion["label_similarity"] is not None
              else "; no label reading"), ""]
    if "title retrieval" in metrics:
        t = metrics["title retrieval"]
        md += [f"## Title retrieval ({t['n_queries']} distinct test titles)", ""]
        md += markdown_table(["mode", "R@1", "R@10"], [[m, t[m]["R@1"], t[m]["R@10"]] for m in MODES])
    md += ["## Label queries (mAP@10 / P@10)", ""]
    rows, read = [], []
    modes = [m for m in (*MODES, "hybrid, no label reading") if any(m in r for r in metrics["label queries"].values())]
    for name, r in metrics["label queries"].items():
        rows.append([name, r["n_queries"], "; ".join(r["examples"])]
                    + [f"{r[m]['mAP@10']:.3f} / {r[m]['P@10']:.3f}" if m in r else "-" for m in modes])
        read += [f"- {line}" for line in r.get("read", [])]
    md += markdown_table(["queries", "n", "examples", *modes], rows)
    if read:
        md += ["Label values read (first queries of each set):", "", *read, ""]
    c = metrics["composed"]
    md += [f"## Composed queries (P@10, {c.get('n_queries', 0)} test queries; text weights {c['text weight']} "
           f"(vector) and {c['hybrid text weight']} (hybrid) and the mode ({c['mode chosen on validation']}) "
           "chosen on validation)", ""]
    md += markdown_table(["query", "P@10"], [[k, v] for k, v in c.items()
                                             if isinstance(v, float) and not k.endswith("text weight")])
    if "transfer" in metrics:
        tr = metrics["transfer"]
        md += [f"## Transfer to {tr['n_items']} photos of another collection (P@10 per label value)", ""]
        for column in ("category", "colour"):
            if column in tr:
                md += [f"### {column} (mean P@10 {tr[column]['mean P@10']:.3f})", ""]
                md += markdown_table(["value", "query", "P@10", "label rate"],
                             [[v, r["query"], r["P@10"], r["label rate"]] for v, r in tr[column]["values"].items()])
    if "shop queries" in metrics:
        shop = metrics["shop queries"]
        md += [f"## Shop-word queries ({shop['n_queries']}, held out; P@10 / mAP@10)", ""]
        md += markdown_table(["mode", "P@10", "mAP@10"], [[k, v["P@10"], v["mAP@10"]] for k, v in shop.items()
                                                          if isinstance(v, dict)])
    lat = metrics["latency"]
    md += ["## Latency", ""] + markdown_table(["measure", "value"], list(lat.items()))
    path.write_text("\n".join(md))
    return path

