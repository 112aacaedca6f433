"""What every store (the local collection, Milvus) derives from its settings: the encoder that
built it and the index spec it was given; one query's search as a batch of one; and closing as a
context manager."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from vestis.errors import EncoderMismatchError


class StoreSettings:
    """Mixed into a store that has ``settings`` (str -> str), ``close()`` and a printable ``location``."""

    settings: dict[str, str]
    location: Any

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def search_batch(self, vectors: np.ndarray, want: int, *, filters: dict[str, Sequence[str]] | None = None,
                     within: np.ndarray | None = None, exclude: Sequence[Sequence[int]] = (),
                     colours: np.ndarray | None = None, colour_weight: float = 0.0, index: str | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def search_vectors(self, vector: np.ndarray, want: int, *, filters: dict[str, Sequence[str]] | None = None,
                       exclude: Sequence[int] = (), colour: np.ndarray | None = None, colour_weight: float = 0.0
                       ) -> tuple[np.ndarray, np.ndarray, int]:
        """The ``want`` best (vids, scores) for ``vector`` (plus ``colour_weight`` times the colour
        similarity), and how many items were eligible: the store's :meth:`search_batch` of one."""
        vids, scores, eligible = self.search_batch(
            np.asarray(vector, np.float32)[None, :], want, filters=filters, exclude=[exclude],
            colours=None if colour is None else np.asarray(colour, np.float32)[None, :], colour_weight=colour_weight)
        found = vids[0] >= 0
        return vids[0][found], scores[0][found], int(eligible[0])

    dim: int
    colour_dim: int

    def encoder_info(self) -> dict[str, Any]:
        """What ``info()`` says of the vectors, in any store: the encoder that made them, their sizes,
        and the garment region the items were cut to (``vestis index --crop``)."""
        return {"encoder": self.encoder_name, "encoder_version": self.encoder_version,
                "crop": self.settings.get("crop", "none"), "encoder_source": self.encoder_source,
                "dim": self.dim, "colour_dim": self.colour_dim}

    @property
    def encoder_name(self) -> str:
        return self.settings["encoder_name"]

    @property
    def encoder_source(self) -> str:
        """What :func:`vestis.encoders.get_encoder` opens this collection's encoder from: a
        built-in name or the path of the ONNX model the collection was indexed with."""
        return self.settings.get("encoder_source") or self.encoder_name

    @property
    def encoder_version(self) -> str:
        return self.settings["encoder_version"]

    @property
    def index_spec(self) -> str:
        return self.settings["index_spec"]

    def check_encoder(self, version: str) -> None:
        """Refuse vectors from an encoder other than the one that built this collection."""
        if version != self.encoder_version:
            raise EncoderMismatchError(
                f"collection {self.location} was built with encoder {self.encoder_name!r} "
                f"(version {self.encoder_version}); vectors from version {version} are not comparable. "
                f"Use --encoder {self.encoder_source}, or build a new collection for this encoder."
            )


def new_settings(*, encoder_name: str, encoder_version: str, encoder_source: str | None, dim: int,
                 colour_dim: int, colour_version: str, index_spec: str) -> dict[str, str]:
    """The settings a new collection starts with, in any store (as strings)."""
    return {
        "encoder_name": encoder_name,
        "encoder_version": encoder_version,
        "encoder_source": encoder_source or encoder_name,
        "dim": str(dim),
        "colour_dim": str(colour_dim),
        "colour_version": colour_version,
        "index_spec": index_spec,
        "created_at": str(time.time()),
    }
