"""A small real collection for the API tests: generated garment JPEGs embedded by the default encoder.

It is built once per session; each test module serves its own copy, so writes in one module never
leak into another.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import write_catalogue
from vestis.data import open_catalogue
from vestis.encoders import get_encoder
from vestis.store.ingest import index_catalogue, open_or_create

COLOURS = {"red": (200, 30, 30), "blue": (30, 50, 200), "green": (30, 160, 60), "black": (25, 25, 25)}
SHAPES = ("shirt", "trousers", "dress")
COPIES = 2


@pytest.fixture(scope="session")
def api_encoder():
    return get_encoder("efficientnet-lite0")


@pytest.fixture(scope="session")
def shop_dir(tmp_path_factory) -> Path:
    """A catalogue folder: 24 garments with colour, kind and a unique name in metadata.csv."""
    folder = tmp_path_factory.mktemp("shop")
    write_catalogue(folder, COLOURS, SHAPES, COPIES,
                    labels=lambda colour, shape, n: {"name": f"{colour.title()} {shape} no. {n}"})
    return folder


@pytest.fixture(scope="session")
def built_collection(tmp_path_factory, shop_dir, api_encoder) -> Path:
    path = tmp_path_factory.mktemp("collections") / "shop"
    coll = open_or_create(path, api_encoder, None)
    index_catalogue(coll, open_catalogue(shop_dir), api_encoder, batch_size=8, progress=False)
    coll.close()
    return path


@pytest.fixture(scope="module")
def collection_copy(tmp_path_factory, built_collection) -> Path:
    """This module's own copy of the built collection."""
    dest = tmp_path_factory.mktemp("copy") / "shop"
    shutil.copytree(built_collection, dest)
    return dest


def add_joint_model(collection: Path, encoder, directory: Path) -> None:
    """Give a collection a joint text-image model with untrained heads (the plumbing of word search
    under test; what training achieves is tested in tests/train/test_train_joint.py)."""
    import torch

    from vestis.encoders.joint import JointModel
    from vestis.encoders.text import text_encoder_version
    from vestis.store.collection import Collection
    from vestis.store.vector_builds import build_joint_index
    from vestis.train.joint import Projection, write_joint_model

    torch.manual_seed(0)
    path = write_joint_model(Projection(encoder.dim, 16), Projection(384, 16), directory, name="shop-joint",
                             version="1", image_encoder=encoder.name, image_encoder_version=encoder.version,
                             text_encoder="all-minilm-l6-v2", text_encoder_version=text_encoder_version("all-minilm-l6-v2"),
                             logit_scale=10.0)
    with Collection.open(collection) as coll:
        build_joint_index(coll, JointModel(path))
