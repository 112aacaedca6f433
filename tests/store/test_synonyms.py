"""Words shoppers use, on real titles: the shop vocabulary, a collection's own synonyms (CLI, bad
files refused with the collection unchanged) and spelling tolerance in keyword search."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.search.test_understand import catalogue, items  # noqa: F401 (fixture)
from tests.store.test_joint_index import DIM, VERSION
from vestis.cli import app
from vestis.data.vocabulary import VocabularyError
from vestis.search.text import TextSearcher
from vestis.store.collection import Collection
from vestis.store.keyword_index import SYNONYMS, KeywordIndex, vocabulary_info


def titles(coll, text: str, k: int = 3) -> list[str]:
    vids, _ = KeywordIndex(coll).search(text, k)
    return [it.metadata["productDisplayName"] for it in coll.items_by_vid(vids.tolist())]


def test_keyword_search_reads_shop_words_and_typos(catalogue):  # noqa: F811
    assert all("Backpack" in t for t in titles(catalogue, "rucksack"))  # no title says rucksack
    assert all("Watch" in t for t in titles(catalogue, "wristwatch"))
    assert titles(catalogue, "blak wach", 2) == ["Titan Women Black Watch", "Puma Men Black Watch Strap"]
    rewrite = KeywordIndex(catalogue).rewrite("blak wach for ladies")
    assert rewrite.spelled == (("blak", "black"), ("wach", "watch"))
    assert rewrite.canonical == "black watch for women"
    assert rewrite.describe() == "blak -> black (spelling); wach -> watch (spelling); ladies -> women"
    query = TextSearcher.open(catalogue).query("blak backpak", mode="keyword")
    assert query.labels.rewrite.spelled == (("blak", "black"), ("backpak", "backpack"))  # shown as understood


def test_a_collections_own_synonyms_are_stored_and_used(catalogue, tmp_path):  # noqa: F811
    assert titles(catalogue, "daypack") != [] and titles(catalogue, "schlepper") == []
    own = tmp_path / "mine.txt"
    own.write_text("# our shoppers' words\nschlepper => backpacks   # the shop floor's word\n")
    result = CliRunner().invoke(app, ["text", "synonyms", str(own), "--collection", str(catalogue.path)])
    assert result.exit_code == 0, result.output
    assert (catalogue.path / SYNONYMS).read_text() == own.read_text()
    assert all("Backpack" in t for t in titles(catalogue, "schlepper"))
    assert vocabulary_info(catalogue)["vocabulary (the collection's own entries)"] == 1
    own.write_text("daypack => watches\n")  # overrides the shipped entry of "daypack"
    assert CliRunner().invoke(app, ["text", "synonyms", str(own), "--collection", str(catalogue.path)]).exit_code == 0
    assert all("Watch" in t for t in titles(catalogue, "daypack"))
    own.write_text("ticker => watches\n")  # search --synonyms stores them, then searches with them
    found = CliRunner().invoke(app, ["search", "--collection", str(catalogue.path), "--text", "ticker", "--mode",
                                     "keyword", "--synonyms", str(own), "--json", "-k", "3"])
    assert found.exit_code == 0, found.output
    assert {r["metadata"]["articleType"] for r in json.loads(found.stdout)["results"]} == {"Watches"}
    assert (catalogue.path / SYNONYMS).read_text() == "ticker => watches\n"


@pytest.mark.parametrize(("content", "message"), [
    (b"a => b\nb => a\n", "cycle"),
    (b", ".join(b"w%d" % i for i in range(10_000)) + b"\n", "characters"),
    (b"tee, t\xe9e\n", "not UTF-8"),
    (b"tee, , tshirts\n", "empty word"),
    (b"x" * 1_000_000, "characters"),
])
def test_bad_synonym_files_are_refused_and_leave_the_collection_unchanged(catalogue, tmp_path, content,
                                                                           message):  # noqa: F811
    good = tmp_path / "good.txt"
    good.write_text("schlepper => backpacks\n")
    runner = CliRunner()
    assert runner.invoke(app, ["text", "synonyms", str(good), "--collection", str(catalogue.path)]).exit_code == 0
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    result = runner.invoke(app, ["text", "synonyms", str(bad), "--collection", str(catalogue.path)])
    assert isinstance(result.exception, VocabularyError) and message in str(result.exception)
    assert (catalogue.path / SYNONYMS).read_text() == good.read_text()
    images = tmp_path / "photos"
    images.mkdir(exist_ok=True)
    Image.new("RGB", (32, 32), (200, 30, 30)).save(images / "red.jpg")
    fresh = tmp_path / "fresh"
    result = runner.invoke(app, ["index", str(images), "--collection", str(fresh), "--synonyms", str(bad), "--json"])
    assert isinstance(result.exception, VocabularyError) and not fresh.exists()  # refused before indexing


def test_the_command_line_exits_2_with_the_line_at_fault(catalogue, tmp_path):  # noqa: F811
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"tee, tshirts\nkurti, , kurtis\n")
    done = subprocess.run([sys.executable, "-m", "vestis", "text", "synonyms", str(bad), "--collection",
                           str(catalogue.path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "bad.txt:2: an empty word" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr and not (catalogue.path / SYNONYMS).exists()


def test_search_json_says_what_was_rewritten(catalogue):  # noqa: F811
    result = CliRunner().invoke(app, ["search", "--collection", str(catalogue.path), "--text", "rucksak",
                                      "--mode", "keyword", "--json"])
    assert result.exit_code == 0, result.output
    rewritten = json.loads(result.stdout)["rewritten"]
    assert rewritten["spelling"] == {"rucksak": "rucksack"} and rewritten["synonyms"] == {"rucksack": ["backpacks"]}


def test_words_naming_a_label_far_above_chance_are_mined(tmp_path):
    rows = ([(f"Titan Men Black Dial Watch {i}", "Watches", "Black", "Men") for i in range(6)]
            + [(f"Wildcraft Women Blue Backpack {i}", "Backpacks", "Blue", "Women") for i in range(6)]
            + [("Fastrack Women Blue Dial Watch", "Watches", "Blue", "Women")]
            + [(f"Puma Men Blue Shirt {i}", "Shirts", "Blue", "Men") for i in range(6)])
    coll = Collection.create(tmp_path / "c", encoder_name="test", encoder_version=VERSION, dim=DIM, colour_dim=0)
    try:
        coll.upsert(items(rows))
        index = KeywordIndex(coll)
        mined = {(m.word, m.column, m.value): m for m in index.mined()}
        assert mined["dial", "articleType", "Watches"].precision == 1.0  # every dial is a watch
        assert mined["dial", "articleType", "Watches"].items == 7
        assert ("titan", "articleType", "Watches") in mined  # a brand of watches only
        assert ("titan", "gender", "Men") not in mined  # all men, but most items are: not far above chance
        assert not any(w in ("watch", "backpack", "black", "men") for w, _c, _v in mined)  # the labels' own words
        assert not any(c in ("year", "flag") for _w, c, _v in mined)
        info = vocabulary_info(coll)
        assert info["mined words used"] == "none (chosen on validation)" and not index.rewrite("dial")
        assert [h for h in info["mined from the titles (word, column, value, items, precision)"]
                if h[0] == "dial"] == [["dial", "articleType", "Watches", 7, 1.0]]
        index.mined_precision = 0.9  # a catalogue whose validation chose them
        assert index.rewrite("dial").expanded == (("dial", ("watches",)),)
    finally:
        coll.close()
