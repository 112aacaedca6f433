"""Query understanding: the label columns of a collection, label values read in a query's words
(exactly and by meaning), and their use in hybrid search."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.store.test_joint_index import DIM, VERSION, joint_model
from vestis.cli import app
from vestis.encoders.text import get_text_encoder
from vestis.search.text import Fusion, TextSearcher
from vestis.search.understand import LabelMatch, LabelVocabulary, Understanding, spans
from vestis.store.collection import Collection, NewItem
from vestis.store.vector_builds import build_joint_index

# (title, articleType, baseColour, gender): three types, three colours, two genders
ROWS = [("Turtle Check Men Navy Blue Shirt", "Shirts", "Navy Blue", "Men"),
        ("Peter England Men Blue Shirt", "Shirts", "Blue", "Men"),
        ("Vero Moda Women Black Shirt", "Shirts", "Black", "Women"),
        ("Titan Women Black Watch", "Watches", "Black", "Women"),
        ("Fastrack Men Blue Watch", "Watches", "Blue", "Men"),
        ("Q&Q Women Navy Blue Watch", "Watches", "Navy Blue", "Women"),
        ("Wildcraft Unisex Black Backpack", "Backpacks", "Black", "Men"),
        ("Skybags Women Blue Backpack", "Backpacks", "Blue", "Women"),
        ("American Tourister Men Navy Blue Backpack", "Backpacks", "Navy Blue", "Men"),
        ("Puma Men Black Watch Strap", "Watches", "Black", "Men")]


def items(rows=ROWS, start: int = 0) -> list[NewItem]:
    rng = np.random.default_rng(start)
    out = []
    for i, (title, kind, colour, gender) in enumerate(rows, start):
        v = rng.normal(size=DIM).astype(np.float32)
        out.append(NewItem(str(i), f"/img/{i}.jpg", f"hash-{i}", v / np.linalg.norm(v), None,
                           {"productDisplayName": title, "articleType": kind, "baseColour": colour,
                            "gender": gender, "year": str(2010 + i % 2), "flag": "yes" if i % 2 else "no"}))
    return out


@pytest.fixture
def catalogue(tmp_path):
    coll = Collection.create(tmp_path / "c", encoder_name="test", encoder_version=VERSION, dim=DIM, colour_dim=0)
    coll.upsert(items())
    yield coll
    coll.close()


@pytest.fixture(scope="module")
def encoder():
    return get_text_encoder(threads=1)


def test_runs_of_words_leave_out_stop_words_at_their_ends():
    assert spans("A rucksack in Navy") == ["rucksack", "navy", "rucksack in navy"]
    assert spans("t-shirt for men") == ["t-shirt", "men", "t-shirt for men"]
    assert spans("for a") == []


def test_narrowing_keeps_values_near_each_columns_best():
    read = Understanding((LabelMatch("gender", "Boys", "guys", 0.76), LabelMatch("gender", "Men", "guys", 0.71),
                          LabelMatch("baseColour", "Navy Blue", "navy", 0.72)))
    assert read.narrowed(0.7, 0.05).filters == {"gender": ["Boys", "Men"], "baseColour": ["Navy Blue"]}
    assert read.narrowed(0.7, 0.0).filters == {"gender": ["Boys"], "baseColour": ["Navy Blue"]}
    assert read.narrowed(0.75, 0.1).filters == {"gender": ["Boys"]}
    assert not read.narrowed(0.9, 0.1)
    assert read.describe().startswith('gender=Boys ("guys" 0.76)')


@pytest.mark.slow
def test_label_values_are_read_exactly_and_by_meaning(catalogue, encoder):
    labels = LabelVocabulary(catalogue, encoder, skip_columns=["productDisplayName"])
    # titles are skipped by name; numbers, yes/no flags and id-like columns are not labels
    assert labels.label_columns() == {"articleType": ["Backpacks", "Shirts", "Watches"],
                                      "baseColour": ["Black", "Blue", "Navy Blue"], "gender": ["Men", "Women"]}
    exact = labels.understand("navy blue shirt for men", 0.6, 0.0)
    assert exact.filters == {"articleType": ["Shirts"], "baseColour": ["Navy Blue"], "gender": ["Men"]}
    assert all(m.similarity == 1.0 for m in exact.matches)  # "blue" alone is part of "navy blue"
    meaning = labels.understand("a wristwatch for ladies", 0.6, 0.0)
    assert meaning.filters == {"articleType": ["Watches"], "gender": ["Women"]}
    assert all(0.6 <= m.similarity < 1.0 for m in meaning.matches)
    assert [m.words for m in meaning.matches] == ["wristwatch", "ladies"]
    assert not labels.understand("zebra", 0.6, 0.0)
    again = labels.understand("a wristwatch for ladies", 0.6, 0.0)  # its runs' vectors come from the cache
    assert again == meaning and "wristwatch" in labels._runs
    catalogue.upsert(items([("Nike Men White Sneakers", "Sports Shoes", "White", "Men")], start=len(ROWS)))
    catalogue.upsert(items([("Adidas Women White Sneakers", "Sports Shoes", "White", "Women")], start=len(ROWS) + 1))
    assert labels.understand("white trainers", 0.5, 0.0).filters["baseColour"] == ["White"]  # follows writes


@pytest.mark.slow
def test_hybrid_search_ranks_the_items_with_the_read_labels_first(catalogue, tmp_path):
    build_joint_index(catalogue, joint_model(tmp_path))  # untrained heads: the vector side is noise
    searcher = TextSearcher.open(catalogue)
    query = searcher.query("a wristwatch for ladies")
    # the shop vocabulary reads both exactly: "wristwatch" is watches, "ladies" women
    assert query.labels.filters == {"articleType": ["Watches"], "gender": ["Women"]}
    assert [(m.words, m.via, m.similarity) for m in query.labels.matches] == [
        ("wristwatch", "watches", 1.0), ("ladies", "women", 1.0)]
    assert query.labels.describe() == ('articleType=Watches ("wristwatch" = watches), gender=Women ("ladies" = '
                                       'women); rewritten: wristwatch -> watches; ladies -> women')
    assert "understand" in query.timings
    # a bonus of 2 outweighs any cosine difference (half of it counts): both labels first, then one of them
    hits = searcher.search(query, k=4, fusion=Fusion("weighted", 0.5, 2.0)).hits
    assert {h.id for h in hits[:2]} == {"3", "5"}  # the women's watches; no title says "wristwatch" or "ladies"
    assert all(h.metadata["articleType"] == "Watches" or h.metadata["gender"] == "Women" for h in hits[2:])
    joint = searcher.understand("a wristwatch for ladies", 0.0, 0.0, space="joint")  # through the joint head
    assert {m.column for m in joint.matches} == {"articleType", "baseColour", "gender"}  # one per column at 0
    vector = searcher.query("a wristwatch for ladies", mode="vector").labels  # labels read in hybrid mode only,
    assert not vector.matches and vector.rewrite.canonical == "a watches for women"  # the words rewritten in all
    filtered = searcher.search(query, k=3, filters={"gender": ["Men"]}).hits
    assert {h.metadata["gender"] for h in filtered} == {"Men"}  # a filter still binds the label candidates
    result = CliRunner().invoke(app, ["search", "--collection", str(catalogue.path), "--text", "watch for women",
                                      "--json"])
    assert result.exit_code == 0, result.output
    understood = json.loads(result.stdout)["understood"]  # the CLI says what it read, as the searcher reads it
    assert understood == [m.as_dict() for m in searcher.query("watch for women").labels.matches]
    read = [(m["column"], m["value"], m["words"], m["similarity"]) for m in understood]
    assert {("articleType", "Watches", "watch", 1.0), ("gender", "Women", "women", 1.0)} <= set(read)
