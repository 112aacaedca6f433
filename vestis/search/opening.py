"""Opening what a query needs: the collection at a location and the encoder that built it."""

from __future__ import annotations

from pathlib import Path

from vestis.encoders import get_encoder
from vestis.encoders.base import ImageEncoder
from vestis.errors import VestisError
from vestis.store import factory
from vestis.store.collection import Collection


def open_collection(location: Path | str) -> Collection:
    """The collection at ``location``: a directory, or a Milvus location (see vestis.store.location)."""
    return factory.open_collection(location)


def open_collection_encoder(collection: Collection, threads: int | None = None) -> ImageEncoder:
    """The encoder ``collection`` was built with (a built-in, or the ONNX model file it recorded),
    checked against the recorded version."""
    try:
        encoder = get_encoder(collection.encoder_source, threads=threads)
    except VestisError as error:
        raise VestisError(f"cannot open the encoder of collection {collection.path}: {error}. Put the model "
                          "back, or index the catalogue into a new collection with another --encoder") from None
    collection.check_encoder(encoder.version)
    return encoder
