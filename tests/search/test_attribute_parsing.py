"""Attribute text parsing: separators, synonyms, weights, and bad input (CLI and API)."""

from __future__ import annotations

import pytest

from vestis.errors import VestisError
from vestis.search.attributes import match_attribute, parse_attributes, split_attribute_text

CLOTHING = ["sleevelength", "neckline", "collar", "category", "gender", "placket", "pattern", "colour"]
PRODUCTS = ["articleType", "baseColour", "gender", "usage", "season", "subCategory"]
FASHIONAI = [
    "collar_design_labels",
    "neckline_design_labels",
    "neck_design_labels",
    "sleeve_length_labels",
    "skirt_length_labels",
    "coat_length_labels",
    "pant_length_labels",
    "lapel_design_labels",
]


@pytest.mark.parametrize(
    "text, parts",
    [
        ("sleeve length; colour", ["sleeve length", "colour"]),
        ("sleeve length, collar design", ["sleeve length", "collar design"]),
        ("neckline and colour with pattern", ["neckline", "colour", "pattern"]),
        ("collar+placket ; ; gender", ["collar", "placket", "gender"]),
        ("  Sleeve Length AND Colour:2  ", ["Sleeve Length", "Colour:2"]),
        ("handbag", ["handbag"]),  # "and" inside a word is not a separator
        ("withers", ["withers"]),
        (" ;, ", []),
    ],
)
def test_split_on_every_separator(text, parts):
    assert split_attribute_text(text) == parts


@pytest.mark.parametrize(
    "phrase, valid, expected",
    [
        ("sleeve length", CLOTHING, "sleevelength"),
        ("Sleeve-Length", CLOTHING, "sleevelength"),
        ("sleeves", CLOTHING, "sleevelength"),
        ("color", CLOTHING, "colour"),
        ("colours", CLOTHING, "colour"),
        ("colors", CLOTHING, "colour"),
        ("collar design", CLOTHING, "collar"),
        ("neck line", CLOTHING, "neckline"),
        ("type", CLOTHING, "category"),
        ("print", CLOTHING, "pattern"),
        ("sex", CLOTHING, "gender"),
        ("colour", PRODUCTS, "baseColour"),
        ("base colour", PRODUCTS, "baseColour"),
        ("article type", PRODUCTS, "articleType"),
        ("category", PRODUCTS, "articleType"),
        ("sub category", PRODUCTS, "subCategory"),
        ("occasion", PRODUCTS, "usage"),
        ("collar design", FASHIONAI, "collar_design_labels"),
        ("sleeve length", FASHIONAI, "sleeve_length_labels"),
        ("neckline", FASHIONAI, "neckline_design_labels"),
        ("pant length", FASHIONAI, "pant_length_labels"),
        ("sleeve length", PRODUCTS, None),
        ("handbag", CLOTHING, None),
    ],
)
def test_match_by_name_singular_and_synonym(phrase, valid, expected):
    assert match_attribute(phrase, valid) == expected


def test_parse_gives_weights_in_order():
    assert parse_attributes("colour:2; sleeve length", CLOTHING) == {"colour": 2.0, "sleevelength": 1.0}
    assert list(parse_attributes("neck line with collar design and color = 0.5", CLOTHING).items()) == [
        ("neckline", 1.0),
        ("collar", 1.0),
        ("colour", 0.5),
    ]
    assert parse_attributes(["sleeve length", "colour: 3"], CLOTHING) == {"sleevelength": 1.0, "colour": 3.0}
    assert parse_attributes("colour; color:2", CLOTHING) == {
        "colour": 3.0
    }  # the same attribute twice adds up


@pytest.mark.parametrize("raw", [None, "", "  ", " ; , ", [], ["", " "]])
def test_no_attributes_means_global_search(raw):
    assert parse_attributes(raw, CLOTHING) == {}


def test_unknown_attribute_lists_the_valid_ones():
    with pytest.raises(VestisError) as e:
        parse_attributes("sleeve length; fabric; heel height", CLOTHING)
    message = str(e.value)
    assert "'fabric'" in message and "'heel height'" in message and "sleeve length'" not in message
    assert "valid attributes: " + ", ".join(CLOTHING) in message


def test_no_index_says_how_to_build_one():
    with pytest.raises(VestisError, match="vestis attributes build"):
        parse_attributes("colour", [])


@pytest.mark.parametrize(
    "text, why",
    [
        ("colour:abc", "must be a number"),
        ("colour:0", "above 0"),
        ("colour:-1", "above 0"),
        ("colour:nan", "above 0"),
        ("colour:inf", "above 0"),
        ("colour:", "must be a number"),
    ],
)
def test_bad_weights_are_refused(text, why):
    with pytest.raises(VestisError, match=why):
        parse_attributes(text, CLOTHING)


def test_unknown_attributes_name_the_valid_ones():
    assert parse_attributes(["", " "], CLOTHING) == {}
    with pytest.raises(VestisError, match="unknown attribute.s. 'fabric'; valid attributes: sleevelength, neckline"):
        parse_attributes("fabric", CLOTHING)
    with pytest.raises(VestisError, match=r"valid attributes: none \(build an attribute index"):
        parse_attributes("colour", [])
    with pytest.raises(VestisError, match="at most 100"):  # a weight past any ratio, or one that overflows
        parse_attributes("colour:" + "9" * 400, CLOTHING)


@pytest.mark.slow
def test_unknown_names_are_read_by_meaning_and_say_so():
    from vestis.encoders.text import get_text_encoder
    from vestis.search.attributes import attribute_phrase, parse_attributes_by_meaning

    valid = ["sleevelength", "neckline", "colour", "pattern", "category", "collar"]
    assert attribute_phrase("sleeve_length_labels") == "sleeve length"
    assert attribute_phrase("baseColour") == "base colour"
    weights, resolved = parse_attributes_by_meaning("arm length; hue:2; collar", valid, get_text_encoder)
    assert weights == {"sleevelength": 1.0, "colour": 2.0, "collar": 1.0}
    assert {part: name for part, (name, _s) in resolved.items()} == {"arm length": "sleevelength", "hue": "colour"}
    assert all(s >= 0.5 for _n, s in resolved.values())
    with pytest.raises(VestisError, match="unknown attribute.*'zebra'.*valid attributes: sleevelength"):
        parse_attributes_by_meaning("zebra", valid, get_text_encoder)
    calls = []
    parse_attributes_by_meaning("colour", valid, lambda: calls.append(1))  # exact names need no encoder
    assert calls == []
