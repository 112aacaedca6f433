"""Evaluation across collections (street to shop): queries from one collection, the gallery another,
relevance from a label map file, through the engine's read path."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import garment_image, jpeg_bytes
from vestis.errors import VestisError
from vestis.eval.cross import CrossConfig, LabelMap, evaluate_across
from vestis.store.collection import Collection

pytestmark = pytest.mark.slow

COLOURS = {"red": (200, 30, 30), "blue": (30, 50, 200), "green": (30, 160, 60)}
SHAPES = ("shirt", "trousers", "dress")
MAP = """
require: [garment]
columns:
  garment:
    gallery: kind
    values: {top: [shirt], legwear: [trousers], frock: [dress]}
  tint:
    gallery: colour
    values: {scarlet: [red], navy: [blue], grass: [green]}
"""


def folder(root: Path, rows: list[dict], size: tuple[int, int]) -> Path:
    root.mkdir(parents=True)
    for row in rows:
        (root / f"{row['id']}.jpg").write_bytes(jpeg_bytes(garment_image(row.pop("rgb"), row.pop("shape"), size=size,
                                                                          seed=row.pop("seed"))))
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def collections(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("cross")
    shop = folder(root / "shop", [{"id": f"{c}-{s}-{n}", "path": f"{c}-{s}-{n}.jpg", "colour": c, "kind": s,
                                   "rgb": rgb, "shape": s, "seed": n}
                                  for c, rgb in COLOURS.items() for s in SHAPES for n in range(2)], (120, 160))
    words = {"red": "scarlet", "blue": "navy", "green": "grass"}
    garments = {"shirt": "top", "trousers": "legwear", "dress": "frock"}
    street = folder(root / "street", [{"id": f"q-{c}-{s}", "path": f"q-{c}-{s}.jpg", "tint": words[c],
                                       "garment": garments[s], "rgb": rgb, "shape": s, "seed": 9}
                                      for c, rgb in COLOURS.items() for s in SHAPES], (150, 150))
    for source, name in ((shop, "shop-c"), (street, "street-c")):
        done = subprocess.run([sys.executable, "-m", "vestis", "index", str(source), "--collection", str(root / name)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    (root / "map.yaml").write_text(MAP)
    return root / "shop-c", root / "street-c", root / "map.yaml"


def test_street_queries_find_the_shop_items_their_labels_map_to(collections):
    shop, street, label_map = collections
    metrics = evaluate_across(shop, street, CrossConfig(label_map, ks=(1, 2, 5)))
    whole = metrics["whole"]
    assert metrics["n_queries"] == 9 and metrics["n_gallery"] == 18
    assert whole["n_queries_without_relevant"] == 0  # each query: the two shop items of its colour and kind
    # the same figures computed apart from the engine: exact cosine ranking of the stored vectors
    with Collection.open(shop) as g, Collection.open(street) as q:
        g_items, q_items = list(g.iter_items()), list(q.iter_items())
        g_vec = np.stack([g.vector_of(it.id)[0] for it in g_items])
        q_vec = np.stack([q.vector_of(it.id)[0] for it in q_items])
    mapping = LabelMap.load(label_map)
    gallery = {c: np.array([it.metadata[c] for it in g_items]) for c in ("kind", "colour")}
    ranking = np.argsort(-(q_vec @ g_vec.T), axis=1, kind="stable")[:, :5]
    rel = np.array([mapping.relevant(it.metadata, gallery)[ranking[i]] for i, it in enumerate(q_items)])
    assert whole["P@1"] == pytest.approx(rel[:, 0].mean(), abs=1e-9)
    assert whole["R@5"] == pytest.approx(rel.any(axis=1).mean(), abs=1e-9)
    assert whole["P@5"] == pytest.approx(rel.sum(axis=1).mean() / 5, abs=1e-9)
    assert whole["R@5"] >= 0.75  # drawn garments of another size and seed still find their kind and colour
    assert whole["query_ms_p50"] > 0 and "top" not in metrics


def test_the_cli_reports_the_same_figures(collections, tmp_path):
    shop, street, label_map = collections
    done = subprocess.run([sys.executable, "-m", "vestis", "eval", "--collection", str(shop), "--query-collection",
                           str(street), "--label-map", str(label_map), "--k", "1,2,5", "--json",
                           "--report", str(tmp_path / "report")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    expected = evaluate_across(shop, street, CrossConfig(label_map, ks=(1, 2, 5)))["whole"]
    assert {key: printed["whole"][key] for key in expected if key != "query_ms_p50"} == \
        {key: value for key, value in expected.items() if key != "query_ms_p50"}
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["whole"] == printed["whole"]


def test_a_region_is_reported_beside_the_whole_photo_with_its_interval(collections):
    shop, street, label_map = collections
    metrics = evaluate_across(shop, street, CrossConfig(label_map, region="top", ks=(1, 5)))
    assert metrics["searched_whole"] == 9  # drawn garments show no person: each is searched whole for the region
    assert metrics["top"]["P@1"] == metrics["whole"]["P@1"]
    assert metrics["P@10_change"] == 0.0 and metrics["mAP@10_change_ci95"] == [0.0, 0.0]


def test_bad_label_maps_are_clear_errors(collections, tmp_path):
    shop, street, _ = collections
    for text, message in (("columns: []", "a label map has"), ("columns: {a: {gallery: kind, values: {}}}\n"
                                                               "require: [b]", "does not map"),
                          ("{{", "not a readable YAML")):
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(VestisError, match=message):
            LabelMap.load(path)
    with pytest.raises(VestisError, match="no label map"):
        LabelMap.load(tmp_path / "none.yaml")
    with pytest.raises(VestisError, match="not auto"):
        evaluate_across(shop, street, CrossConfig(tmp_path / "none.yaml", region="auto"))


def test_relevance_follows_every_mapped_column():
    label_map = LabelMap({"garment": ("kind", {"top": frozenset({"shirt"})}),
                          "tint": ("colour", {"navy": frozenset({"blue"})})}, ("garment",))
    gallery = {"kind": np.array(["shirt", "shirt", "dress"]), "colour": np.array(["blue", "red", "blue"])}
    assert label_map.relevant({"garment": "top", "tint": "navy"}, gallery).tolist() == [True, False, False]
    assert label_map.relevant({"garment": "top", "tint": ""}, gallery).tolist() == [True, True, False]
    assert label_map.relevant({"garment": "cape"}, gallery).tolist() == [False, False, False]
    assert not label_map.asks({"tint": "navy"}) and label_map.asks({"garment": "top"})
