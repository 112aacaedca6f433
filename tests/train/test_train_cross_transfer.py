"""Cross-collection transfer sets: `vestis train` judges a trained head on one collection's photos
querying another collection (by default its own training collection), relevance from a label map
file, against the untrained backbone, and refuses a set that cannot be scored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.train.conftest import other_garments
from vestis.errors import VestisError
from vestis.eval.metrics import retrieval_metrics
from vestis.train.command import run
from vestis.train.config import DataConfig, TransferSetConfig, load_config
from vestis.train.features import load_items
from vestis.train.heads import EmbeddingHead
from vestis.train.report import console_table
from vestis.train.trainer import load_checkpoint
from vestis.train.transfer import judged_by, load_transfer_sets, measure

# the transfer garments' shape (``category``) to the training garments' ``articleType``; colour to
# ``baseColour``, with the dress left unmapped: a dress query has no relevant item
MAP = """
require: [category]
columns:
  category:
    gallery: articleType
    values: {shirt: [shirt], trousers: [trousers]}
  colour:
    gallery: baseColour
    values: {red: [red], blue: [blue], green: [green]}
"""


@pytest.fixture(scope="module")
def label_map(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("map") / "garments-map.yaml"
    path.write_text(MAP)
    return path


def _with_transfer(config: Path, sets: list[dict]) -> Path:
    raw = yaml.safe_load(config.read_text())
    raw["transfer"] = sets
    config.write_text(yaml.safe_dump(raw))
    return config


def _exact_scores(queries: np.ndarray, gallery: np.ndarray, relevance: np.ndarray) -> dict[str, float]:
    """P@10, R@1, R@10, mAP@10 by a full sort of every query's similarities (ties: lower index first)."""
    order = np.argsort(-(queries @ gallery.T), axis=1, kind="stable")[:, :10]
    rel = np.take_along_axis(relevance, order, axis=1)
    return retrieval_metrics(rel, relevance.sum(axis=1), (1, 10), include_queries_without_relevant=True)


def test_a_cross_set_scores_model_and_backbone_on_the_training_gallery(garment_config, garment_collection,
                                                                        transfer_collection, label_map):
    config = _with_transfer(garment_config, [{"collection": str(transfer_collection), "label_map": str(label_map),
                                               "name": "street"}])
    summary = run(load_config(config, ["train.epochs=3"]))
    result = summary["transfer"]["street"]
    assert result["items"] == result["model"]["n_queries"] == 27  # every garment has a category
    assert result["gallery"] == "the training collection" and result["gallery_items"] == 54

    queries = load_items(DataConfig(collection=str(transfer_collection)), transfer_collection.parent)
    gallery = load_items(DataConfig(collection=str(garment_collection)), garment_collection.parent)
    colour = {"red": "red", "blue": "blue", "green": "green"}
    relevance = np.array([[g["articleType"] == q["category"] and q["category"] != "dress"
                           and g["baseColour"] == colour[q["colour"]] for g in gallery.metadata]
                          for q in queries.metadata])
    assert relevance.sum() == 18 * 6  # 18 shirt and trousers queries, 6 items of their group each
    ckpt = load_checkpoint(Path(summary["run_dir"]) / "best.pt")
    head = EmbeddingHead(ckpt["in_dim"], 32)
    head.load_state_dict(ckpt["model"])
    with torch.no_grad():
        embed = head.eval().embed
        model = _exact_scores(embed(torch.from_numpy(queries.vectors)).numpy(),
                              embed(torch.from_numpy(gallery.vectors)).numpy(), relevance)
    backbone = _exact_scores(queries.vectors, gallery.vectors, relevance)
    for metric in ("mAP@10", "P@10", "R@1", "R@10"):
        assert result["backbone"][metric] == pytest.approx(backbone[metric])
        assert result["model"][metric] == pytest.approx(model[metric])
    # a third of the queries (the dresses) can find nothing: hit@10 is at most 2/3
    assert 0 < result["backbone"]["R@10"] <= 2 / 3 + 1e-9
    low, high = result["mAP@10_change_ci95"]
    assert low <= result["mAP@10_change"] <= high
    assert result["worse"] == (result["model"]["mAP@10"] < result["backbone"]["mAP@10"])

    on_disk = json.loads((Path(summary["run_dir"]) / "metrics.json").read_text())
    assert on_disk["transfer"]["street"]["model"] == result["model"]
    report = Path(summary["report"]).read_text()
    assert (f"| street | garments-map map | {result['model']['mAP@10']:.4f} | "
            f"{result['model']['P@10']:.4f} |") in report
    table = console_table(summary)
    assert table.columns[0]._cells[-1] == "street"
    assert table.columns[1]._cells[-1] == "garments-map map"


def test_the_val_and_test_halves_split_the_queries_by_id(garment_collection, transfer_collection, label_map):
    gallery = load_items(DataConfig(collection=str(garment_collection)), garment_collection.parent)
    configs = [TransferSetConfig(collection=str(transfer_collection), label_map=str(label_map), name=half,
                                 queries=half, gallery=str(garment_collection)) for half in ("all", "val", "test")]
    (everything, val, test), notes = load_transfer_sets(configs, gallery.encoder_version)
    assert not notes
    assert not set(val.items.ids) & set(test.items.ids)
    assert set(val.items.ids) | set(test.items.ids) == set(everything.items.ids)
    for half in (val, test):  # stratified by category: 9 photos of each shape make 4 and 5
        categories = [m["category"] for m in half.items.metadata]
        assert sorted(categories.count(c) for c in ("shirt", "trousers", "dress")) in ([4, 4, 5], [4, 5, 5])
        rows = [everything.items.ids.index(i) for i in half.items.ids]
        np.testing.assert_array_equal(half.relevance, everything.relevance[rows])
    again, _ = load_transfer_sets(configs[1:2], gallery.encoder_version)
    assert again[0].items.ids == val.items.ids
    result = measure([val], lambda tset: tset.items.vectors)["val"]  # the backbone as the "model"
    assert result["model"] == result["backbone"] and result["model"]["n_queries"] == len(val.items)
    assert judged_by(result) == f"garments-map map in {garment_collection.name}, val half"


def test_a_bad_label_map_is_refused_before_training(garment_config, transfer_collection, tmp_path):
    bad = tmp_path / "bad-map.yaml"
    bad.write_text("columns: [category, articleType]\n")
    config = _with_transfer(garment_config, [{"collection": str(transfer_collection), "label_map": str(bad)}])
    done = subprocess.run([sys.executable, "-m", "vestis", "train", "--config", str(config)], capture_output=True,
                          text=True, cwd=Path(__file__).parents[2])
    output = " ".join((done.stdout + done.stderr).split())  # the console wraps long lines
    assert done.returncode == 2 and "Traceback" not in output
    assert "bad-map.yaml" in output and "a label map has 'columns:" in output
    assert not (tmp_path / "run" / "best.pt").exists()

    unmatched = tmp_path / "unmatched-map.yaml"  # a gallery column the training items do not have
    unmatched.write_text("columns: {category: {gallery: style, values: {shirt: [Shirts]}}}\n")
    _with_transfer(garment_config, [{"collection": str(transfer_collection), "label_map": str(unmatched)}])
    with pytest.raises(VestisError, match="gallery columns that its items do not have: style"):
        run(load_config(config))
    _with_transfer(garment_config, [{"collection": str(transfer_collection), "label_map": str(tmp_path / "none.yaml")}])
    with pytest.raises(VestisError, match="no label map at"):
        run(load_config(config))


def test_a_collection_indexed_with_another_encoder_is_refused(garment_config, garment_collection, label_map,
                                                              tmp_path):
    elsewhere = other_garments(tmp_path / "elsewhere", encoder_version="another-backbone/v9")
    encoder_version = load_items(DataConfig(collection=str(garment_collection)), tmp_path).encoder_version
    for query, gallery in ((elsewhere, None), (garment_collection, elsewhere)):
        cfg = TransferSetConfig(collection=str(query), label_map=str(label_map),
                                gallery=None if gallery is None else str(gallery))
        with pytest.raises(VestisError, match=f"{elsewhere} was indexed with another-backbone/v9, the model was "
                                              "trained on"):
            load_transfer_sets([cfg], encoder_version)
    config = _with_transfer(garment_config, [{"collection": str(elsewhere), "label_map": str(label_map)}])
    with pytest.raises(VestisError, match="re-index it with the training backbone"):
        run(load_config(config))


def test_a_missing_gallery_skips_the_set_unless_required(garment_collection, transfer_collection, label_map,
                                                         tmp_path):
    encoder_version = load_items(DataConfig(collection=str(garment_collection)), tmp_path).encoder_version
    cfg = TransferSetConfig(collection=str(transfer_collection), label_map=str(label_map),
                            gallery=str(tmp_path / "no-shop"), name="street")
    sets, (note,) = load_transfer_sets([cfg], encoder_version)
    assert not sets and "no collection at" in note and "no-shop" in note
    cfg.required = True
    with pytest.raises(VestisError, match="no-shop"):
        load_transfer_sets([cfg], encoder_version)


@pytest.mark.parametrize(("entry", "message"), [
    ({"label": "category"}, "judged by its label_map, not by `label`"),
    ({"queries": "train"}, "'train' is not one of all, val, test"),
    ({"attribute": "category"}, "one space per attribute"),
])
def test_a_cross_set_that_cannot_be_scored_is_refused(garment_config, transfer_collection, label_map, entry,
                                                      message):
    config = _with_transfer(garment_config, [{"collection": str(transfer_collection), "label_map": str(label_map),
                                               **entry}])
    with pytest.raises(VestisError, match=message):
        load_config(config)


def test_gallery_and_queries_belong_to_cross_sets(garment_config, transfer_collection):
    config = _with_transfer(garment_config, [{"collection": str(transfer_collection), "label": "category",
                                               "queries": "val"}])
    with pytest.raises(VestisError, match="which names a `label_map`"):
        load_config(config)
