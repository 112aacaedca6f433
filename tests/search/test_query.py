"""The query model: one SearchQuery whatever the surface, every rule checked where it is made."""

from __future__ import annotations

import pytest

from vestis.search.query import MAX_WEIGHT, QueryError, SearchQuery, parse_weighted

IMAGE = b"\xff\xd8 not decoded here"


@pytest.mark.parametrize(("fields", "message"), [
    ({}, "give an image, an item id, a text or positive examples"),
    ({"image": IMAGE, "item_id": "a"}, "at most one of an image and an item id"),
    ({"text": "red", "attrs": "colour"}, "attributes cannot be combined with text"),
    ({"item_id": "a", "negative": ("b",), "attrs": "colour"}, "attributes cannot be combined"),
    ({"text": "red", "color_weight": 0.5}, "color_weight applies to image search only"),
    ({"text": "red", "mode": "keyword", "item_id": "a"}, "keyword search takes words only"),
    ({"text": "red", "mode": "keyword", "text_weight": 0.3}, "keyword search takes words only"),
    ({"positive": ("a",), "mode": "keyword"}, "keyword search takes words only"),
    ({"item_id": "a", "region": "top"}, "region applies to a query image"),
    ({"image": IMAGE, "region": "sleeves"}, "region must be one of auto, none, top, bottom, shoes, person"),
    ({"text": "red", "mode": "fuzzy"}, "mode must be one of keyword, vector, hybrid"),
    ({"item_id": "a", "k": 0}, "k must be a whole number between 1 and 1000"),
    ({"item_id": "a", "k": True}, "k must be a whole number"),
    ({"item_id": "a", "offset": 10_001}, "offset must be a whole number between 0 and 10000"),
    ({"item_id": "a", "color_weight": float("nan")}, "color_weight must be a finite number"),
    ({"text": "red", "text_weight": float("inf")}, "text_weight must be a finite number"),
    ({"text": "red", "text_weight": 1.5}, "text_weight must be a finite number between 0 and 1"),
    ({"text": ""}, "text must have 1 to 500 characters"),
    ({"item_id": "a", "negative": ("1" + "0" * 400 + ":b",)}, "its weight must be a number above 0"),
    ({"positive": ("99999999999999999999999999999999999999:b",)}, "at most 100"),
    ({"image": IMAGE, "negative_images": ((float("inf"), IMAGE),)}, "bad negative image"),
    ({"positive": tuple(f"i{n}" for n in range(51))}, "at most 50 positive examples"),
])
def test_a_query_that_breaks_a_rule_is_refused_where_it_is_made(fields, message):
    with pytest.raises(QueryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SearchQuery(**fields)


def test_what_kind_of_query_it_is():
    assert SearchQuery(image=IMAGE).describe() == {"type": "image"}
    assert SearchQuery(item_id="a").describe() == {"type": "item", "item_id": "a"}
    assert not SearchQuery(item_id="a", attrs="colour").is_text
    for text in (SearchQuery(text="red"), SearchQuery(item_id="a", positive=["b"]),
                 SearchQuery(item_id="a", negative=["b"]), SearchQuery(image=IMAGE, text_weight=0.3)):
        assert text.is_text and text.describe()["type"] == "text"
    assert SearchQuery(image=IMAGE).region_mode == "none"  # whole-photo search unless asked
    assert SearchQuery(image=IMAGE, region="auto").region_mode == "auto"
    assert SearchQuery(item_id="a", positive=["b"]).positive == ("b",)  # lists are kept as tuples: hashable


def test_weights_as_rclip_writes_them_within_their_range():
    assert parse_weighted("2:15970") == (2.0, "15970")
    assert parse_weighted(f"{MAX_WEIGHT:g}:x") == (MAX_WEIGHT, "x")
    assert parse_weighted("1e1:x") == (10.0, "x")
    assert parse_weighted("inf:x") == (1.0, "inf:x")  # not a decimal number: part of the id
