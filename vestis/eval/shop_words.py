"""Queries written as shoppers write them, judged by label values (``vestis eval --text --shop-queries``).

A query file is tab-separated, ``query<TAB>relevant``, with ``#`` comment lines and a header row;
``relevant`` names label columns and the values an answer may have, ``articleType=Sandals|Flats;
gender=Women``: an item is relevant when it has one of the values in every column named. The set
shipped for Fashion Product Images (``benchmarks/text_shop_queries.tsv``) was written before any
measurement and is never used to build or tune anything: it is a held-out check of the vocabulary.
P@10 and mAP@10 per search mode, over the test items, with the query rewriting on and off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vestis.errors import VestisError
from vestis.eval.metrics import retrieval_metrics
from vestis.search.text import MODES, Fusion, TextQuery, TextSearcher

MAX_QUERIES = 10_000


@dataclass(frozen=True)
class ShopQuery:
    text: str
    relevant: dict[str, frozenset[str]]  # column -> the values an answer may have

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        return all(str(metadata.get(column)) in values for column, values in self.relevant.items())


def read_shop_queries(path: Path) -> list[ShopQuery]:
    """The queries of a shop-query file (see the module docstring); a malformed line is a clear error."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise VestisError(f"cannot read the shop queries {path}: {e}") from e
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#") or line.startswith("query\t"):
            continue
        text, tab, spec = line.partition("\t")
        relevant: dict[str, frozenset[str]] = {}
        for part in spec.split(";") if tab else ():
            column, eq, values = part.partition("=")
            if eq and column.strip() and values.strip():
                relevant[column.strip()] = frozenset(v.strip() for v in values.split("|") if v.strip())
        if not text.strip() or not relevant:
            raise VestisError(f"{path}:{number}: write QUERY<TAB>column=value|value;column=value")
        out.append(ShopQuery(text.strip(), relevant))
    if not out or len(out) > MAX_QUERIES:
        raise VestisError(f"{path}: 1 to {MAX_QUERIES:,} queries expected (found {len(out)})")
    return out


def _queries(searcher: TextSearcher, texts: Sequence[str], mode: str, reading: tuple[float, float, str]
             ) -> list[TextQuery]:
    if mode == "keyword":
        return [TextQuery(t) for t in texts]
    vectors = searcher.model.embed_text([searcher.keywords.rewrite(t).canonical for t in texts])
    if mode == "vector":
        return [TextQuery(None, v) for v in vectors]
    return [TextQuery(t, v, labels=searcher.understand(t, *reading)) for t, v in zip(texts, vectors)]


def score_shop_queries(searcher: TextSearcher, queries: Sequence[ShopQuery], items: Sequence[Any],
                       fusion: Fusion, reading: tuple[float, float, str], modes: Sequence[str] = MODES,
                       k: int = 10) -> dict[str, Any]:
    """P@k and mAP@k of each mode over ``items`` (the test split), rewriting on then off."""
    vids = np.array([it.vid for it in items], np.int64)
    metadata = {it.vid: it.metadata for it in items}
    relevant = np.array([[q.matches(it.metadata) for it in items] for q in queries], bool)
    out: dict[str, Any] = {"n_queries": len(queries), "n_items": len(items),
                           "queries without a relevant item": int((~relevant.any(1)).sum())}
    texts = [q.text for q in queries]
    before = searcher.keywords.rewriting
    try:
        for rewriting in (True, False):
            searcher.keywords.rewriting = rewriting
            for mode in modes:
                hits = np.zeros((len(queries), k), bool)
                for i, query in enumerate(_queries(searcher, texts, mode, reading)):
                    ranked = searcher.ranking(query, k, vids, fusion)[0]
                    hits[i, :len(ranked)] = [queries[i].matches(metadata[v]) for v in ranked.tolist()]
                scores = retrieval_metrics(hits, relevant.sum(1), [k], include_queries_without_relevant=True)
                out[f"{mode}, {'vocabulary' if rewriting else 'words as typed'}"] = {
                    f"P@{k}": scores[f"P@{k}"], f"mAP@{k}": scores[f"mAP@{k}"]}
    finally:
        searcher.keywords.rewriting = before
    return out
