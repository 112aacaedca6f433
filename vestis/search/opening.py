"""Opening what a query needs: the collection at a location and the encoder that built it."""

from __future__ import annotations

from pathlib import Path

from vestis.encoders import get_encoder
from vestis.encoders.base import ImageEncoder
from vestis.encoders.cpu import describe_cpu, has_vnni
from vestis.encoders.quantize import backbone_of, needs_vnni, quantized_name
from vestis.errors import VestisError
from vestis.store import factory
from vestis.store.collection import Collection


def open_collection(location: Path | str) -> Collection:
    """The collection at ``location``: a directory, or a Milvus location (see vestis.store.location)."""
    return factory.open_collection(location)


def open_collection_encoder(collection: Collection, threads: int | None = None) -> ImageEncoder:
    """The encoder ``collection`` was built with (a built-in, or the ONNX model file it recorded),
    checked against the recorded version. A collection built by the 8-bit recipe for VNNI CPUs
    is refused on a CPU without VNNI, naming the reindex that moves it to the portable recipe."""
    source = collection.encoder_source
    if needs_vnni(source) and not has_vnni():
        raise VestisError(
            f"collection {collection.path} was built with {source}, the 8-bit encoder for CPUs with VNNI, and "
            f"this CPU has none ({describe_cpu()}): its queries would be embedded with overflowing 8-bit sums "
            f"and would not match the stored vectors. Re-embed it for this CPU with: vestis reindex --collection "
            f"{collection.path} --encoder {quantized_name(backbone_of(source))}")
    try:
        encoder = get_encoder(source, threads=threads)
    except VestisError as error:
        raise VestisError(f"cannot open the encoder of collection {collection.path}: {error}. Put the model "
                          "back, or index the catalogue into a new collection with another --encoder") from None
    collection.check_encoder(encoder.version)
    return encoder
