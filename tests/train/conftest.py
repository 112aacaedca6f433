"""Fixtures for the training tests: a small collection of real (Pillow-drawn) garment photos
embedded with the default encoder, three shapes x three colours, six images each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

COLOURS = {"red": (200, 30, 30), "blue": (30, 50, 200), "green": (30, 160, 60)}
SHAPES = ("shirt", "trousers", "dress")
PER_GROUP = 6
# every config that `vestis train` reads (the ann-sweep files are `vestis bench ann`'s)
TRAINING_CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")
                          if not p.name.startswith("ann-sweep"))


@pytest.fixture(scope="session")
def garment_collection(tmp_path_factory) -> Path:
    """A collection directory (efficientnet-lite0 vectors) whose items point at PNG files."""
    from tests.conftest import garment_image
    from vestis.encoders import get_encoder
    from vestis.store.collection import Collection, NewItem

    root = tmp_path_factory.mktemp("garments")
    images, metadata, paths = [], [], []
    for shape in SHAPES:
        for name, colour in COLOURS.items():
            for seed in range(PER_GROUP):
                jitter = np.random.default_rng([seed, len(images)]).integers(-40, 41, 3)
                rgb = tuple(int(v) for v in np.clip(np.array(colour) + jitter, 0, 255))
                image = garment_image(rgb, shape, seed=seed)
                path = root / "images" / f"{shape}-{name}-{seed}.png"
                path.parent.mkdir(exist_ok=True)
                image.save(path)
                images.append(image)
                metadata.append({"articleType": shape, "baseColour": name})
                paths.append(path)
    encoder = get_encoder("efficientnet-lite0")
    vectors = encoder.embed_images(images)
    collection = root / "collection"
    with Collection.create(collection, encoder_name=encoder.name, encoder_version=encoder.version,
                           dim=encoder.dim, colour_dim=0) as coll:
        coll.upsert([NewItem(p.stem, str(p), p.stem, v, None, m) for p, v, m in zip(paths, vectors, metadata)])
    return collection


def other_garments(root: Path, encoder_version: str | None = None) -> Path:
    """A collection of garments drawn at another size and with other seeds than the training ones,
    labelled ``category`` (shape) and ``colour``: 3 shapes x 3 colours x 3 seeds."""
    from tests.conftest import garment_image
    from vestis.encoders import get_encoder
    from vestis.store.collection import Collection, NewItem

    encoder = get_encoder("efficientnet-lite0")
    paths, images, metadata = [], [], []
    for shape in SHAPES:
        for name, colour in COLOURS.items():
            for seed in range(10, 13):
                path = root / "images" / f"{shape}-{name}-{seed}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                images.append(garment_image(colour, shape, size=(150, 150), seed=seed))
                images[-1].save(path)
                paths.append(path)
                metadata.append({"category": shape, "colour": name})
    collection = root / "collection"
    with Collection.create(collection, encoder_name=encoder.name, encoder_version=encoder_version or encoder.version,
                           dim=encoder.dim, colour_dim=0) as coll:
        coll.upsert([NewItem(p.stem, str(p), p.stem, v, None, m)
                     for p, v, m in zip(paths, encoder.embed_images(images), metadata)])
    return collection


@pytest.fixture(scope="session")
def transfer_collection(tmp_path_factory) -> Path:
    """:func:`other_garments`, shared by the tests that judge a trained model out of its domain."""
    return other_garments(tmp_path_factory.mktemp("transfer-garments"))


@pytest.fixture
def garment_config(garment_collection, tmp_path) -> Path:
    """A small stage-1 config over the garment collection, writing into tmp_path/run."""
    cfg = {"name": "garments", "kind": "embedding", "output": str(tmp_path / "run"),
           "data": {"collection": str(garment_collection), "labels": ["articleType", "baseColour"]},
           "head": {"kind": "arcface", "dim": 32},
           "train": {"epochs": 4, "batch_size": 24, "lr": 0.01, "patience": 0, "progress": False},
           "export": {"onnx": False}}
    path = tmp_path / "garments.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
