"""The attribute-aware model: attention shapes, the attribute-specific triplet loss, the feature
cache, training from a config, the ONNX export, and search by attributes end to end (library and
`vestis search --attrs`) on Pillow-drawn garments whose colour and shape vary independently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import garment_image
from tests.train.conftest import other_garments
from vestis.cli import app
from vestis.errors import VestisError
from vestis.train.attributes.embedder import AttributeEmbedder
from vestis.train.attributes.export import export_attribute_model, load_head
from vestis.train.attributes.loss import AttributeTripletLoss
from vestis.train.command import train_from_config as train_attribute_from_config
from vestis.train.config import AttributeRunConfig
from vestis.train.config import load_config as load_attribute_config

ATTRIBUTES = ["articleType", "baseColour"]


# ----------------------------------------------------------------------------------------- model
def test_attention_and_embedding_shapes():
    torch.manual_seed(0)
    head = AttributeEmbedder(3, channels=8, global_dim=16, dim=5, attribute_dim=4, hidden=6).eval()
    maps, glob = torch.rand(2, 8, 14, 14) * 6, torch.randn(2, 16)
    alpha = head.attention(maps, torch.tensor([[0, 1, 2], [2, 1, 0]]))
    assert alpha.shape == (2, 3, 14, 14)
    torch.testing.assert_close(alpha.sum(dim=(2, 3)), torch.ones(2, 3))
    assert not torch.allclose(alpha[0, 0], alpha[0, 1])  # each attribute looks elsewhere
    every = head.all_attributes(maps, glob)
    assert every.shape == (2, 3, 5)
    torch.testing.assert_close(every.norm(dim=2), torch.ones(2, 3))
    for a in range(3):  # one attribute per image gives the same vectors as all at once
        torch.testing.assert_close(head(maps, glob, torch.tensor([a, a])), every[:, a])
    local_only = AttributeEmbedder(3, channels=8, global_dim=0, dim=5).eval()
    assert local_only.all_attributes(maps, None).shape == (2, 3, 5)
    with pytest.raises(VestisError, match="global embedding"):
        head.all_attributes(maps, None)


def test_a_residual_model_starts_as_the_backbone_in_every_space():
    torch.manual_seed(0)
    head = AttributeEmbedder(3, channels=8, global_dim=16, dim=6, attribute_dim=4, hidden=6, residual=True).eval()
    training = torch.randn(200, 16) * torch.linspace(3, 0.1, 16) + 2.0  # an off-centre cloud, decreasing spread
    head.fit_start(training)
    torch.testing.assert_close(head.basis @ head.basis.T, torch.eye(6), atol=1e-5, rtol=0)
    assert head.correction_norm().item() == 0.0
    # the first principal directions of the centred cloud are its widest axes
    assert set(head.basis.abs().argmax(dim=1).tolist()) == set(range(6))
    maps, glob = torch.rand(5, 8, 14, 14) * 6, torch.randn(5, 16) * torch.linspace(3, 0.1, 16) + 2.0
    every = head.all_attributes(maps, glob)
    z = torch.nn.functional.normalize(torch.nn.functional.normalize(glob, dim=1) - head.centre, dim=1)
    start = torch.nn.functional.normalize(z @ head.basis.T, dim=1)
    for a in range(3):  # each space is the centred backbone on its principal directions
        torch.testing.assert_close(every[:, a], start)
    with torch.no_grad():
        head.project.weight.fill_(0.1)
    assert head.correction_norm().item() == pytest.approx(0.1**2 * head.project.weight.numel())
    trained = head.all_attributes(maps, glob)[:, 0]
    assert not torch.allclose(trained, start)
    # head.interpolate scales the learned projection for retrieval only: 0 is the start again, 0.5
    # lies between, and the training output (forward) keeps all of it
    closeness = []
    for a in (1.0, 0.5, 0.0):
        head.interpolate = a
        closeness.append((head.all_attributes(maps, glob)[:, 0] * start).sum(dim=1).mean().item())
    assert closeness[0] < closeness[1] < closeness[2] == pytest.approx(1.0)
    torch.testing.assert_close(head(maps, glob, torch.zeros(5, dtype=torch.long)), trained)
    with pytest.raises(VestisError, match="global branch"):
        AttributeEmbedder(3, channels=8, global_dim=0, dim=6, residual=True)
    with pytest.raises(VestisError, match="at most its size"):
        AttributeEmbedder(3, channels=8, global_dim=16, dim=32, residual=True)


def test_triplet_loss_uses_negatives_of_the_same_attribute_only():
    # classes 0, 1: two values of attribute 0; class 2: a value of attribute 1
    loss_fn = AttributeTripletLoss([0, 0, 1], margin=0.2, batch_hard=True)
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    # class 2 sits on class 0 but belongs to another attribute: it is no negative for it
    assert float(loss_fn(e, labels)[0]) == pytest.approx(0.0, abs=1e-6)
    collapsed = torch.ones(6, 2)
    assert float(loss_fn(collapsed, labels)[0]) == pytest.approx(0.2, abs=1e-6)  # margin - 1 + 1
    every = AttributeTripletLoss([0, 0, 1], margin=0.2, batch_hard=False)
    assert float(every(collapsed, labels)[0]) == pytest.approx(0.2, abs=1e-6)
    assert float(every(e, labels)[0]) == 0.0


# ----------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def attribute_config(garment_collection, tmp_path_factory) -> Path:
    """A small attribute-model config over the garments (articleType = shape, baseColour = colour)."""
    out = tmp_path_factory.mktemp("attribute-run")
    cfg = {
        "name": "garments-asen",
        "kind": "attributes",
        "output": str(out / "run"),
        "data": {
            "collection": str(garment_collection),
            "labels": ATTRIBUTES,
            "split_fractions": [0.5, 0.2, 0.3],
            "feature_cache": str(out / "features"),
        },
        "model": {
            "attributes": ATTRIBUTES,
            "attribute_dim": 16,
            "hidden": 32,
            "dropout": 0.0,
            "global_branch": False,
        },  # the spatial attention alone learns these garments fastest
        "head": {"kind": "triplet", "dim": 16, "miner": "none", "m_per_class": 4},
        "train": {"epochs": 30, "batch_size": 24, "lr": 1e-2, "patience": 0, "progress": False},
    }
    path = out / "garments-asen.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def trained(attribute_config) -> dict:
    """The attribute model trained from ``attribute_config`` (half a minute of CPU)."""
    summary = train_attribute_from_config(attribute_config)
    out = attribute_config.parent
    return {"config": attribute_config, "summary": summary, "run": out / "run", "features": out / "features"}


@pytest.fixture(scope="module")
def trained_global(trained) -> Path:
    """One epoch of the model with its global branch (two ONNX inputs), on the same cached features."""
    run = trained["config"].parent / "global"
    train_attribute_from_config(
        trained["config"], ["model.global_branch=true", "train.epochs=1", f"output={run}"]
    )
    return run


@pytest.fixture(scope="module")
def trained_residual(trained) -> Path:
    """One epoch of the residual model (global branch, anchored, half its projection for retrieval),
    on the same cached features."""
    run = trained["config"].parent / "residual"
    train_attribute_from_config(trained["config"], [
        "model.global_branch=true", "head.residual=true", "head.anchor=0.1", "head.interpolate=0.5", "train.epochs=1",
        f"output={run}"])
    return run


def test_config_is_parsed_by_its_kind_and_validated(attribute_config):
    root = Path(__file__).parents[2]
    for name in ("clothing-attributes-asen", "fashion-product-asen"):
        assert isinstance(load_attribute_config(root / f"configs/{name}.yaml"), AttributeRunConfig)
    assert load_attribute_config(root / "configs/fashion-product-asen.yaml").model.max_train_items == 4000
    cfg = load_attribute_config(attribute_config, ["head.dim=8"])
    assert cfg.head.dim == 8 and cfg.model.attributes == ATTRIBUTES
    for override, message in [
        ("model.attributes=[]", "model.attributes"),
        ("head.miner=semi-hard", "head.miner"),
        ("model.feature_map=3x3", "feature_map"),
        ("model.bogus=1", "unknown config key"),
        ("kind=finetune", "unknown config key model"),  # the model section belongs to kind: attributes
        ("finetune.blur=1", "the finetune section sets up fine-tuning"),
        ("train.val_split=test", "held out"),
        ("head.residual=true", "needs model.global_branch=true"),
        ("head.anchor=0.1", "set head.residual=true"),
        ("head.interpolate=0.5", "set head.residual=true"),
        ("head.backbone_weight=0.5", "apply to the global heads"),
    ]:
        with pytest.raises(VestisError, match=message):
            load_attribute_config(attribute_config, [override])


@pytest.mark.slow
def test_training_writes_the_run_and_beats_global_features(trained):
    summary, run = trained["summary"], trained["run"]
    for name in (
        "config.yaml",
        "split.csv",
        "best.pt",
        "last.pt",
        "curves.png",
        "metrics.json",
        "model.onnx",
        "model.json",
    ):
        assert (run / name).exists(), name
    assert summary["pairs"] == 2 * 54 and summary["classes"] == 6
    test = summary["test"]
    assert set(test["model"]["attributes"]) == set(ATTRIBUTES)
    assert test["model"]["attributes"]["articleType"]["n_queries"] >= 10
    assert test["model"]["attribute_mAP"] > 0.9
    assert test["model"]["attribute_mAP"] > test["global_features"]["attribute_mAP"]


@pytest.mark.slow
def test_each_transfer_set_is_scored_in_the_space_of_its_attribute(attribute_config, transfer_collection, tmp_path):
    """Other garments judged by shape in the articleType space and by colour in the baseColour
    space (and, as a control, by colour in the articleType space); the figures are leave-one-out of
    the exported model on the images, and the sets' feature maps are cached with their collection."""
    from vestis.encoders.attribute_encoder import AttributeEncoder
    from vestis.eval.protocols import leave_one_out
    from vestis.train.config import DataConfig
    from vestis.train.features import load_items

    sets = [{"collection": str(transfer_collection), "label": "category", "attribute": "articleType",
             "name": "shape"},
            {"collection": str(transfer_collection), "label": "colour", "attribute": "baseColour", "name": "colour"},
            {"collection": str(transfer_collection), "label": "colour", "attribute": "articleType",
             "name": "colour-in-shape-space"}]
    summary = train_attribute_from_config(attribute_config, [f"output={tmp_path / 'run'}",
                                                             f"transfer={json.dumps(sets)}"])
    results = summary["transfer"]
    assert list(results) == ["shape", "colour", "colour-in-shape-space"]
    assert [r["attribute"] for r in results.values()] == ["articleType", "baseColour", "articleType"]
    assert list((transfer_collection / "features").glob("features-*.json"))

    items = load_items(DataConfig(collection=str(transfer_collection)), tmp_path)
    encoder = AttributeEncoder(tmp_path / "run" / "model.onnx")
    embedded = encoder.embed_images([Image.open(source) for source in items.sources])
    for name, r in results.items():
        labels = items.groups([r["label"]])
        exported = leave_one_out(embedded[:, encoder.attributes.index(r["attribute"])], labels, (1, 10))
        backbone = leave_one_out(items.vectors, labels, (1, 10))
        for metric in ("mAP@10", "P@10", "R@1"):
            assert r["model"][metric] == pytest.approx(exported[metric], abs=0.02), (name, metric)
            assert r["backbone"][metric] == pytest.approx(backbone[metric]), (name, metric)
        assert r["model"]["n_queries"] == r["items"] == 27
    # the colour space finds the same colour on other garments, far better than the backbone and
    # than the shape space does
    colour, control = results["colour"]["model"]["mAP@10"], results["colour-in-shape-space"]["model"]["mAP@10"]
    assert colour > 0.9 and colour > results["colour"]["backbone"]["mAP@10"] + 0.3 and colour > control + 0.2
    worse = [name for name, r in results.items() if r["worse"]]
    assert [w.split(" on ")[1].split(" (")[0] for w in summary["transfer_warnings"]] == worse
    report = Path(summary["report"]).read_text()
    assert "| shape | category (articleType space) | " in report
    assert (f"In domain (test split): attribute MAP {summary['test']['model']['attribute_mAP']:.4f} against "
            f"{summary['test']['global_features']['attribute_mAP']:.4f}") in report


@pytest.mark.slow
def test_the_anchor_holds_a_residual_model_near_its_backbone_start(attribute_config, transfer_collection, tmp_path):
    """On other garments, a strongly anchored residual model stays near its start (the centred
    backbone on its principal directions) in every space; without the anchor the colour space
    moves away from it and learns colour."""
    from vestis.encoders.attribute_encoder import AttributeEncoder
    from vestis.train.config import DataConfig
    from vestis.train.features import load_items

    sets = [{"collection": str(transfer_collection), "label": "colour", "attribute": "baseColour", "name": "colour"}]
    items = load_items(DataConfig(collection=str(transfer_collection)), tmp_path)
    images = [Image.open(source) for source in items.sources]
    agreement, summaries = {}, {}
    for name, anchor in (("held", 100), ("free", 0)):
        summaries[name] = train_attribute_from_config(attribute_config, [
            "model.global_branch=true", "head.residual=true", f"head.anchor={anchor}",
            f"transfer={json.dumps(sets)}", f"output={tmp_path / name}"])
        head, _ = load_head(tmp_path / name / "best.pt")
        vectors = torch.nn.functional.normalize(torch.from_numpy(items.vectors), dim=1)
        start = torch.nn.functional.normalize(torch.nn.functional.normalize(vectors - head.centre, dim=1)
                                              @ head.basis.T, dim=1).numpy()
        embedded = AttributeEncoder(tmp_path / name / "model.onnx").embed_images(images)
        agreement[name] = [float((embedded[:, a] * start).sum(axis=1).mean()) for a in range(len(ATTRIBUTES))]
    # cosine to the start, per space: about 0.8 anchored, near 0 in the free shape space
    assert min(agreement["held"]) > 0.7 and max(agreement["free"]) < 0.5
    held, free = (summaries[n]["transfer"]["colour"]["model"]["mAP@10"] for n in ("held", "free"))
    assert free > 0.9 and free > held + 0.2
    assert summaries["free"]["test"]["model"]["attribute_mAP"] > summaries["held"]["test"]["model"]["attribute_mAP"]


@pytest.mark.slow
def test_a_transfer_image_that_cannot_be_read_is_left_out_of_model_and_backbone(attribute_config, tmp_path, caplog):
    other = other_garments(tmp_path / "other")
    (tmp_path / "other" / "images" / "dress-red-10.png").write_bytes(b"not a png")  # broken since indexing
    sets = [{"collection": str(other), "label": "category", "attribute": "articleType"}]
    summary = train_attribute_from_config(attribute_config, [f"output={tmp_path / 'run'}", "train.epochs=1",
                                                             f"transfer={json.dumps(sets)}"])
    (result,) = summary["transfer"].values()
    assert result["items"] == result["model"]["n_queries"] == result["backbone"]["n_queries"] == 26
    assert "1 of its 27 items are left out" in caplog.text


def test_a_transfer_set_names_an_attribute_of_the_model(attribute_config, garment_config):
    by_label, by_attribute = ("transfer=[{collection: elsewhere, label: category}]",
                              "transfer=[{collection: elsewhere, label: category, attribute: articleType}]")
    with pytest.raises(VestisError, match=r"'category' is not one of model.attributes \(articleType, baseColour\)"):
        load_attribute_config(attribute_config, [by_label])
    assert load_attribute_config(attribute_config, [by_attribute]).transfer[0].space == "articleType"
    with pytest.raises(VestisError, match="attribute-aware model"):
        load_attribute_config(garment_config, [by_attribute])


@pytest.mark.slow
def test_feature_cache_is_computed_once_in_float16(trained, garment_collection, monkeypatch):
    from vestis.encoders import get_encoder
    from vestis.store.collection import Collection
    from vestis.store import feature_cache

    pointer = next(trained["features"].glob("features-*.json"))
    state = json.loads(pointer.read_text())
    assert (
        len(state["ids"]) == 54
        and state["dtype"] == "float16"
        and state["shapes"]["feature_map_14"] == [112, 14, 14]
    )
    maps = np.load(trained["features"] / state["outputs"]["feature_map_14"], mmap_mode="r")
    assert isinstance(maps, np.memmap) and maps.dtype == np.float16 and maps.shape == (54, 112, 14, 14)
    with Collection.open(garment_collection) as coll:
        items = list(coll.iter_items())
    triples = [(it.id, it.hash, lambda s=it.source: Path(s).read_bytes()) for it in items]
    monkeypatch.setattr("vestis.encoders.pipeline.embed_items", lambda *a, **k: pytest.fail("recomputed"))
    cached = feature_cache.cached_features(
        triples, get_encoder("efficientnet-lite0"), trained["features"], ["feature_map_14", "embedding"]
    )
    assert sorted(cached.row) == sorted(it.id for it in items)


@pytest.mark.slow
def test_feature_cache_computes_only_new_or_changed_items(tmp_path):
    from vestis.encoders import get_encoder
    from vestis.store.feature_cache import cached_features

    encoder = get_encoder("efficientnet-lite0")
    images = {f"g{n}": garment_image((40 * n, 90, 200 - 30 * n), seed=n) for n in range(4)}

    def triples(keys):
        return [(i, keys.get(i, "v1"), lambda im=images[i]: _png(im)) for i in images]

    first = cached_features(triples({}), encoder, tmp_path, ["feature_map_14", "embedding"], progress=False)
    before = {i: np.array(first.arrays["embedding"][first.row[i]]) for i in images}
    direct = encoder.feature_maps(np.stack([encoder.preprocess(images["g2"])]), "14x14")[0]
    np.testing.assert_allclose(first.arrays["feature_map_14"][first.row["g2"]], direct, rtol=1e-2, atol=1e-2)
    images["g1"] = garment_image((10, 200, 10), shape="dress", seed=9)
    second = cached_features(
        triples({"g1": "v2"}), encoder, tmp_path, ["feature_map_14", "embedding"], progress=False
    )
    assert len(list(tmp_path.glob("*-embedding.npy"))) == 1  # the old arrays were replaced
    for i in ("g0", "g2", "g3"):
        np.testing.assert_array_equal(second.arrays["embedding"][second.row[i]], before[i])
    assert not np.allclose(second.arrays["embedding"][second.row["g1"]], before["g1"], atol=1e-3)


def _png(image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "global", "residual"])
def test_onnx_export_matches_pytorch(trained, trained_global, trained_residual, kind):
    from vestis.encoders.attribute_encoder import AttributeEncoder
    from vestis.train.attributes.evaluation import embed_items

    run = {"local": trained["run"], "global": trained_global, "residual": trained_residual}[kind]
    global_branch = kind != "local"
    sidecar = json.loads((run / "model.json").read_text())
    assert (
        sidecar["attributes"] == ATTRIBUTES and sidecar["dim"] == 16 and sidecar["onnx_max_abs_diff"] < 1e-4
    )
    assert sidecar["values"]["baseColour"] == ["blue", "green", "red"]
    model = AttributeEncoder(run / "model.onnx")
    assert model.backbone_outputs == (
        ["feature_map_14", "embedding"] if global_branch else ["feature_map_14"]
    )
    head, _ = load_head(run / "best.pt")
    assert head.residual == (kind == "residual") and head.interpolate == (0.5 if head.residual else 1.0)
    if head.residual:  # the start (centre and principal directions) is part of the checkpoint
        assert float(head.centre.norm()) > 0.1
        torch.testing.assert_close(head.basis @ head.basis.T, torch.eye(16), atol=1e-4, rtol=0)
    images = [garment_image((200, 30, 30), "dress", seed=3), garment_image((30, 50, 200), "shirt", seed=4)]
    batch = np.stack([model.backbone.preprocess(im) for im in images])
    features = model.backbone.infer(batch, ["feature_map_14", "embedding"])
    glob = features["embedding"] if global_branch else None
    expected = embed_items(head, features["feature_map_14"], glob, np.arange(2))
    got = model.embed_images(images)
    assert got.shape == (2, 2, 16)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    vectors, attributes = model.embed_images_with_global(images)
    np.testing.assert_allclose(attributes, got, atol=1e-6)
    np.testing.assert_allclose(vectors, model.backbone.embed_images(images), atol=1e-5)
    again = export_attribute_model(run / "best.pt", run / "again.onnx", version="2")
    assert json.loads(again.with_suffix(".json").read_text())["version"] == "2"


# ----------------------------------------------------------------------------------------- search
@pytest.fixture(scope="module")
def indexed(trained, garment_collection, tmp_path_factory) -> Path:
    """A copy of the garment collection with its attribute vectors built from the trained model."""
    from vestis.encoders.attribute_encoder import AttributeEncoder
    from vestis.store.vector_builds import build_attribute_index
    from vestis.store.collection import Collection

    path = tmp_path_factory.mktemp("indexed") / "collection"
    shutil.copytree(garment_collection, path)
    with Collection.open(path) as coll:
        report = build_attribute_index(coll, AttributeEncoder(trained["run"] / "model.onnx"), progress=False)
    assert report.embedded == 54 and not report.skipped
    return path


def _labels(item_id: str) -> tuple[str, str]:
    shape, colour, _seed = item_id.split("-")
    return shape, colour


@pytest.mark.slow
def test_changing_the_attribute_changes_the_ranking(indexed):
    from vestis.search.attributes import AttributeSearcher
    from vestis.store.collection import Collection

    with Collection.open(indexed) as coll:
        searcher = AttributeSearcher.open(coll)
        query = searcher.query_from_image(garment_image((205, 35, 25), "shirt", seed=77))  # a new red shirt
        results = {}
        for attribute in ATTRIBUTES:
            query.weights = searcher.parse({"articleType": "type", "baseColour": "colour"}[attribute])
            results[attribute] = [_labels(h.id) for h in searcher.search(query, k=12).hits]
    shapes = [s for s, _c in results["articleType"]]
    colours = [c for _s, c in results["baseColour"]]
    assert shapes.count("shirt") >= 11, results["articleType"]  # same shape, any colour
    assert colours.count("red") >= 11, results["baseColour"]  # same colour, any shape
    # the other attribute matters little: 12 of the 18 shirts come in 2 or 3 colours, 12 reds in 2 or 3 shapes
    assert len({c for _s, c in results["articleType"]}) >= 2, results["articleType"]
    assert len({s for s, _c in results["baseColour"]}) >= 2, results["baseColour"]


@pytest.mark.slow
def test_cli_index_and_search_by_attributes(trained, garment_collection, tmp_path):
    """`vestis index --attribute-model`, then `vestis search IMAGE --attrs ...` end to end, and
    the incremental case: items added later are embedded by the next `vestis index`."""
    images = garment_collection.parent / "images"
    shop = tmp_path / "shop"
    shutil.copytree(images, shop, ignore=shutil.ignore_patterns("*-2.png", "*-3.png"))
    collection = tmp_path / "collection"
    model = trained["run"] / "model.onnx"
    runner = CliRunner()
    res = runner.invoke(
        app, ["index", str(shop), "-c", str(collection), "--encoder", "efficientnet-lite0",
              "--attribute-model", str(model), "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["attributes"]["embedded"] == 36
    for extra in images.glob("*-2.png"):  # new catalogue images: the next `vestis index` embeds them too
        shutil.copy(extra, shop / extra.name)
    res = runner.invoke(app, ["index", str(shop), "-c", str(collection), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["attributes"]["embedded"] == 9
    res = runner.invoke(app, ["attributes", "info", "-c", str(collection), "--json"])
    assert (
        json.loads(res.stdout)["items_embedded"] == 45 and json.loads(res.stdout)["attributes"] == ATTRIBUTES
    )

    query = tmp_path / "query.png"
    garment_image((30, 150, 60), "dress", seed=55).save(query)  # a green dress
    hits = {}
    for attrs in ("colour", "article type", "colour:2; type"):
        res = runner.invoke(
            app, ["search", str(query), "-c", str(collection), "--attrs", attrs, "-k", "6", "--json"]
        )
        assert res.exit_code == 0, res.output
        hits[attrs] = [_labels(r["id"]) for r in json.loads(res.stdout)["results"]]
    assert all(c == "green" for _s, c in hits["colour"])
    assert all(s == "dress" for s, _c in hits["article type"])
    assert hits["colour:2; type"][0] == ("dress", "green")
    res = runner.invoke(app, ["search", str(query), "-c", str(collection), "--attrs", "fabric", "--json"])
    assert isinstance(res.exception, VestisError)
    assert "unknown attribute(s) 'fabric'; valid attributes: articleType, baseColour" in str(res.exception)
    res = runner.invoke(
        app,
        ["search", "--id", "dress-green-0", "-c", str(collection), "--attrs", "colour", "-k", "3", "--json"],
    )
    assert res.exit_code == 0, res.output
    ids = [r["id"] for r in json.loads(res.stdout)["results"]]
    assert "dress-green-0" not in ids and all(_labels(i)[1] == "green" for i in ids)
    res = runner.invoke(
        app, ["search", str(query), "-c", str(collection), "-k", "3", "--json"]
    )  # global search
    assert res.exit_code == 0 and len(json.loads(res.stdout)["results"]) == 3


@pytest.mark.slow
def test_api_searches_by_attributes(indexed, tmp_path):
    """POST /search and /submit take attrs; 422 lists the valid attributes; /api/info lists them;
    POST /items embeds the new item for every attribute."""
    from fastapi.testclient import TestClient

    from tests.conftest import jpeg_bytes
    from vestis.api.app import create_app

    collection = tmp_path / "collection"
    shutil.copytree(indexed, collection)
    query = garment_image((30, 50, 200), "trousers", seed=42)  # blue trousers
    with TestClient(create_app(collection, workers=1, api_key="k")) as client:
        assert client.get("/api/info").json()["attributes"] == ATTRIBUTES
        files = {"file": ("q.jpg", jpeg_bytes(query), "image/jpeg")}
        by_colour = client.post("/search", files=files, data={"k": "6", "attrs": "colour"})
        assert by_colour.status_code == 200, by_colour.text
        assert all(_labels(h["id"])[1] == "blue" for h in by_colour.json()["results"])
        by_type = client.post("/search", files=files, data={"k": "6", "attrs": "article type"})
        assert all(_labels(h["id"])[0] == "trousers" for h in by_type.json()["results"])
        weighted = client.post(
            "/search", json={"item_id": "trousers-blue-0", "k": 3, "attrs": ["colour:2", "type"]}
        )
        assert weighted.status_code == 200, weighted.text
        assert [_labels(h["id"]) for h in weighted.json()["results"]] == [("trousers", "blue")] * 3
        submit = client.post("/submit", params={"k": 4}, json={"img_path": "dress-red-1", "attrs": "colour"})
        assert submit.status_code == 200, submit.text
        assert all(_labels(i)[1] == "red" for i in submit.json()["ids"])
        bad = client.post("/submit", json={"img_path": "dress-red-1", "attrs": "sleeve length; colour"})
        assert bad.status_code == 422
        assert "unknown attribute(s) 'sleeve length'; valid attributes: articleType, baseColour" in bad.text
        added = client.post(
            "/items",
            files={"file": ("n.jpg", jpeg_bytes(query), "image/jpeg")},
            data={"id": "new-blue-trousers"},
            headers={"X-API-Key": "k"},
        )
        assert added.status_code in (200, 201), added.text
        found = client.post("/search", files=files, data={"k": "1", "attrs": "colour; type"}).json()[
            "results"
        ]
        assert found[0]["id"] == "new-blue-trousers"
