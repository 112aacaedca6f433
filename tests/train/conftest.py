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


@pytest.fixture
def garment_config(garment_collection, tmp_path) -> Path:
    """A small stage-1 config over the garment collection, writing into tmp_path/run."""
    cfg = {"name": "garments", "output": str(tmp_path / "run"),
           "data": {"collection": str(garment_collection), "labels": ["articleType", "baseColour"]},
           "head": {"kind": "arcface", "dim": 32},
           "train": {"epochs": 4, "batch_size": 24, "lr": 0.01, "patience": 0, "progress": False},
           "export": {"onnx": False}}
    path = tmp_path / "garments.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
