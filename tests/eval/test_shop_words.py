"""Held-out shop-word queries: the file format, its errors, and P@10 with rewriting on and off on real titles."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.search.test_understand import catalogue  # noqa: F401 (fixture)
from vestis.errors import VestisError
from vestis.eval.shop_words import read_shop_queries, score_shop_queries
from vestis.search.text import Fusion, TextSearcher

SHIPPED = Path(__file__).parents[2] / "benchmarks" / "text_shop_queries.tsv"


def test_the_shipped_set_reads_and_bad_lines_are_named(tmp_path):
    queries = read_shop_queries(SHIPPED)
    assert len(queries) >= 60 and len({q.text for q in queries}) == len(queries)
    assert queries[0].matches({"articleType": "Tshirts", "gender": "Men"})
    assert not queries[0].matches({"articleType": "Tshirts", "gender": "Women"})
    bad = tmp_path / "q.tsv"
    bad.write_text("query\trelevant\nred dress\tarticleType=Dresses\nno labels here\n")
    with pytest.raises(VestisError, match=r"q.tsv:3: write QUERY<TAB>column=value"):
        read_shop_queries(bad)


def test_rewriting_is_scored_on_and_off(catalogue, tmp_path):  # noqa: F811
    path = tmp_path / "q.tsv"
    path.write_text("query\trelevant\nrucksak\tarticleType=Backpacks\nwristwatch for ladies\tarticleType=Watches;"
                    "gender=Women\n")
    searcher = TextSearcher.open(catalogue)
    scores = score_shop_queries(searcher, read_shop_queries(path), list(catalogue.iter_items()), Fusion(),
                                (0.6, 0.1, "text"), modes=("keyword",), k=2)
    assert scores["keyword, vocabulary"]["P@2"] == 1.0  # a typo and two shop words, all read
    assert scores["keyword, words as typed"]["P@2"] == 0.0  # no title says any of them
    assert searcher.keywords.rewriting  # left as it was
