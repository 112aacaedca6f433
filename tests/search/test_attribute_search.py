"""Attribute search scoring: the weighted sum of per-attribute cosine similarities, with filters,
exclusion and paging, over a collection's attribute index."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from vestis.errors import VestisError
from vestis.search.attributes import AttributeQuery, AttributeSearcher
from vestis.store.attribute_index import AttributeIndex
from vestis.store.collection import Collection, NewItem

ATTRIBUTES, ATTR_DIM, N = ["colour", "kind"], 6, 40


@pytest.fixture
def searcher(tmp_path):
    rng = np.random.default_rng(0)
    coll = Collection.create(tmp_path / "c", encoder_name="t", encoder_version="t/1", dim=4, colour_dim=3)
    colours = np.abs(rng.normal(size=(N, 3))).astype(np.float32)
    colours /= np.linalg.norm(colours, axis=1, keepdims=True)
    kinds = ["shirt" if n % 2 else "dress" for n in range(N)]
    coll.upsert(
        [
            NewItem(
                f"i{n}",
                f"/x/{n}.jpg",
                str(n),
                np.eye(4, dtype=np.float32)[n % 4],
                colours[n],
                {"kind": kinds[n]},
            )
            for n in range(N)
        ]
    )
    (tmp_path / "m.onnx").write_bytes(b"model")
    (tmp_path / "m.json").write_text("{}")
    model = SimpleNamespace(
        version="attr/1",
        attributes=ATTRIBUTES,
        dim=ATTR_DIM,
        path=tmp_path / "m.onnx",
        backbone=SimpleNamespace(version="t/1"),
    )
    index = AttributeIndex.configure(coll, model)
    vectors = rng.normal(size=(N, len(ATTRIBUTES), ATTR_DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
    vids = np.array([row[0] for row in index.missing()])
    index.add(vids, vectors)
    yield AttributeSearcher(coll, index, model), vectors, colours
    coll.close()


def expected_order(
    vectors: np.ndarray, query: np.ndarray, weights: dict[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    scores = sum(w * vectors[:, ATTRIBUTES.index(a)] @ query[ATTRIBUTES.index(a)] for a, w in weights.items())
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order, scores[order]


@pytest.mark.parametrize("weights", [{"colour": 1.0}, {"kind": 1.0}, {"colour": 2.0, "kind": 0.5}])
def test_score_is_the_weighted_sum_of_attribute_cosines(searcher, weights):
    search, vectors, _colours = searcher
    query = vectors[3] * 0.6 + vectors[7] * 0.4  # unequal: a tie would leave the order to rounding
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    response = search.search(AttributeQuery(np.zeros(4, np.float32), attributes=query, weights=weights), k=10)
    order, scores = expected_order(vectors, query, weights)
    assert [h.id for h in response.hits] == [f"i{n}" for n in order[:10]]
    np.testing.assert_allclose([h.score for h in response.hits], scores[:10], rtol=1e-5, atol=1e-6)
    assert response.candidates == N and "search" in response.timings_ms


def test_changing_the_attribute_changes_the_ranking(searcher):
    search, vectors, _colours = searcher
    by = {
        a: [
            h.id
            for h in search.search(
                AttributeQuery(np.zeros(4, np.float32), attributes=vectors[0], weights={a: 1.0}), k=5
            ).hits
        ]
        for a in ATTRIBUTES
    }
    assert by["colour"][0] == by["kind"][0] == "i0"  # the item itself matches in every attribute
    assert by["colour"] != by["kind"]


def test_item_query_filters_and_paging(searcher):
    search, vectors, _colours = searcher
    query = search.query_from_item("i0")
    np.testing.assert_array_equal(query.attributes, vectors[0])
    query.weights = {"kind": 1.0}
    page1 = search.search(query, k=4)
    page2 = search.search(query, k=4, offset=4)
    order, _ = expected_order(vectors, vectors[0], {"kind": 1.0})
    assert [h.id for h in page1.hits + page2.hits] == [f"i{n}" for n in order[1:9]]  # i0 itself left out
    shirts = search.search(query, k=50, filters={"kind": ["shirt"]})
    assert len(shirts.hits) == N // 2 and all(h.metadata["kind"] == "shirt" for h in shirts.hits)


def test_bad_queries_are_refused(searcher):
    search, vectors, _colours = searcher
    query = AttributeQuery(np.zeros(4, np.float32), attributes=vectors[0], weights={"colour": 1.0})
    with pytest.raises(VestisError, match="k must be between"):
        search.search(query, k=0)
    with pytest.raises(VestisError, match="colour"):
        search.search(query, colour_weight=0.5)
    with pytest.raises(VestisError, match="at least one attribute"):
        search.search(AttributeQuery(np.zeros(4, np.float32), attributes=vectors[0]))
    with pytest.raises(VestisError, match="no attribute vectors yet"):
        search.search(AttributeQuery(np.zeros(4, np.float32), weights={"colour": 1.0}))


def test_a_colour_attribute_is_fused_with_the_colour_descriptor(searcher):
    search, vectors, colours = searcher
    query = AttributeQuery(np.zeros(4, np.float32), colour=colours[5], attributes=vectors[5])
    query.weights = {"colour": 2.0, "kind": 1.0}
    expected = (
        2.0 * (vectors[:, 0] @ vectors[5, 0] + colours @ colours[5]) / 2  # learned and descriptor, averaged
        + vectors[:, 1] @ vectors[5, 1]
    )
    hits = search.search(query, k=N).hits
    got = {h.id: h.score for h in hits}
    np.testing.assert_allclose([got[f"i{n}"] for n in range(N)], expected, rtol=1e-5, atol=1e-6)
    with_colour_weight = search.search(query, k=N, colour_weight=0.5).hits
    np.testing.assert_allclose(
        sorted(h.score for h in with_colour_weight),
        sorted(expected + 0.5 * colours @ colours[5]),
        rtol=1e-5,
        atol=1e-6,
    )
