"""The shop vocabulary (synonyms file, matching, bad files) and spelling tolerance."""

from __future__ import annotations

import pytest

from vestis.data.spelling import Speller, distance
from vestis.data.vocabulary import (MAX_LINE, MAX_WORDS, Vocabulary, VocabularyError, parse, read_entries,
                                    shipped_entries)


def vocab(text: str, shipped: bool = False) -> Vocabulary:
    entries = parse(text.encode(), "test.txt")
    return Vocabulary.from_entries(shipped_entries(), entries) if shipped else Vocabulary.from_entries(entries)


def test_two_way_entries_rewrite_to_their_first_word_and_one_way_only_forwards():
    v = vocab("tshirts, tee, t shirt   # spell\nsneakers, trainers\nkicks => sneakers\n")
    tee = v.rewrite("A Tee in Navy")
    assert tee.canonical == "a tshirts in navy" and tee.expanded == (("tee", ("tshirts",)),)
    assert tee.keyword == "a tee in navy tshirts"
    assert v.rewrite("black T-Shirt").canonical == "black tshirts"  # punctuation and case aside
    assert v.rewrite("tees").canonical == "tshirts"  # a plural "s" aside
    kicks = v.rewrite("kicks")
    assert kicks.expanded == (("kicks", ("sneakers",)),) and kicks.canonical == "sneakers"
    # one-way: "kicks" finds sneakers, sneakers never finds "kicks"; the first word needs nothing more
    assert not v.rewrite("sneakers") and v.rewrite("sneakers").keyword == "sneakers"
    assert v.rewrite("trainers").expanded == (("trainers", ("sneakers",)),)
    assert "tee -> tshirts" in tee.describe()


def test_the_longest_phrase_wins_and_a_known_phrase_is_kept_whole():
    v = vocab("navy blue, navy\nblue, azure\n")
    assert v.rewrite("navy blue shirt").canonical == "navy blue shirt"  # not "navy blue blue"
    assert v.rewrite("navy shirt").canonical == "navy blue shirt"


def test_the_shipped_vocabulary_reads_shop_words_as_catalogue_labels():
    v = vocab("", shipped=True)
    assert v.rewrite("jumper for ladies").canonical == "sweaters for women"
    assert v.rewrite("kicks").expanded[0][1] == ("casual shoes", "sports shoes")
    assert v.rewrite("kurthi").canonical == "kurtis" and not v.rewrite("kurti")  # a plural is the same word
    assert v.rewrite("gray hoodie").canonical == "grey sweatshirts"


def test_a_catalogue_file_overrides_the_shipped_entries_of_its_words():
    v = vocab("kicks => sports shoes\n", shipped=True)
    assert v.rewrite("kicks").expanded == (("kicks", ("sports shoes",)),)  # not casual shoes any more
    assert v.rewrite("tee").canonical == "tshirts"  # the other shipped entries stay


@pytest.mark.parametrize(("text", "message"), [
    ("a => b\nb => a\n", "cycle"),
    ("a => b\nb, c\nc => a\n", "cycle"),  # through a two-way entry
    ("a, b => a\n", "cycle"),
    ("a, , b\n", "empty word"),
    ("a, ---\n", "empty word"),
    (", ".join(f"w{i}" for i in range(10_000)) + "\n", "characters"),  # 10,000 words: the line is too long
    (", ".join(f"w{i}" for i in range(100)) + "\n", "more than 64 words"),
    ("x" * 1_000_000 + "\n", "characters"),
    ("a => b => c\n", "more than one"),
])
def test_bad_files_are_refused_with_the_line(text, message):
    with pytest.raises(VocabularyError, match=message) as e:
        vocab("ok, fine\n" + text)
    assert "test.txt" in str(e.value) or "cycle" in str(e.value)


def test_limits_and_bytes_that_are_not_utf8(tmp_path):
    assert MAX_WORDS < 10_000 and MAX_LINE < 1_000_000
    bad = tmp_path / "syn.txt"
    bad.write_bytes(b"tee, tshirts\nkurti, k\xff\n")
    with pytest.raises(VocabularyError, match=r"syn.txt:2: not UTF-8 .*0xff"):
        read_entries(bad)
    with pytest.raises(VocabularyError, match="cannot read"):
        read_entries(tmp_path / "missing.txt")


def test_spelling_finds_the_nearest_known_word():
    speller = Speller({"sneakers": 40, "jacket": 90, "jackets": 3, "black": 500, "blank": 1, "tee": 5})
    assert speller.correct("sneekers") == "sneakers"
    assert speller.correct("jaket") == "jacket"  # the most used of the nearest
    assert speller.correct("blakc") == "black"  # neighbours swapped
    assert speller.correct("jacket") is None and speller.correct("tea") is None  # known; too short
    assert speller.correct("zebra") is None and speller.correct("h4ts") is None
    pieces = Speller({"sweatshirts": 30, "sweatpants": 4, "jackets": 9})
    assert pieces.correct("sweat") == "sweatshirts" and pieces.correct("jack") is None  # a piece of 5 letters on
    assert distance("abcd", "acbd", 2) == 1 and distance("kitten", "sitting", 5) == 3
