"""Per-item vectors of a Milvus collection (attribute vectors; the joint text-image space is the
same kind with one slot): the contract of the local :class:`vestis.store.item_vectors.ItemVectors`
(``missing``, ``add``, ``table``, ``stored_vectors``, ``embedded``, ``save``, ``generation``,
``check_version``) on a Milvus collection ``NAME__<kind>``::

    vid (primary key), id, labels, vector = the item's slot vectors side by side
                                            (then its colour descriptor, for attributes)

Milvus limits the vector fields of a collection, so the slots of a kind share one field: the
weighted sum of per-attribute cosine similarities (plus the colour term) is then one inner product
with a query that holds each asked attribute's vector times its weight and zeros elsewhere, and
attribute search is one search pushed down to Milvus, filtered there by ``labels``. A replaced or
removed item's rows are dropped with it (:meth:`forget`), as the local store's trigger does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import numpy as np

from vestis.errors import EncoderMismatchError
from vestis.index.vectors import VectorStore
from vestis.locks import RankedLock
from vestis.store.milvus.expressions import ids_in
from vestis.store.db import check_slot_vectors
from vestis.store.location import Location
from vestis.store.milvus.connection import QUERY_CONSISTENCY, READ_ROWS, MilvusConnection
from vestis.store.milvus.layout import MAX_ID, new_generation

SEARCH_LIMIT = 16384  # Milvus's largest topk


class MilvusCollection(Protocol):
    """What per-item vectors use of their :class:`vestis.store.milvus.MilvusCollection`."""

    db: MilvusConnection
    location: Location
    path: Path
    settings: dict[str, str]
    colour_dim: int

    @property
    def generation(self) -> int: ...
    @property
    def lock(self) -> RankedLock: ...

    def __len__(self) -> int: ...
    def setting(self, key: str) -> str | None: ...
    def set_settings(self, values: dict[str, str]) -> None: ...
    def sources(self) -> list[tuple[int, str, str, str]]: ...
    def rows_by_vid(self, vids: Sequence[int], fields: Sequence[str] = ..., with_colour: bool = ...
                    ) -> dict[int, dict[str, Any]]: ...
    def expression(self, filters: dict[str, Sequence[str]] | None, exclude: Sequence[int] = ()) -> str | None: ...


class MilvusItemVectors:
    """One kind of per-item vectors of a Milvus collection (see the module docstring). Subclasses
    name it: ``KIND`` (the settings prefix and collection suffix), ``WITH_COLOUR`` (the item's colour
    descriptor follows its slots) and ``REBUILD_HINT``. Thread-safe."""

    KIND: ClassVar[str]
    WITH_COLOUR: ClassVar[bool] = False
    REBUILD_HINT: ClassVar[str]

    def __init__(self, collection: MilvusCollection) -> None:
        self.collection = collection
        self.db = collection.db
        self.name = collection.location.name + self.suffix()
        settings = collection.settings
        self.model_path = settings.get(f"{self.KIND}_model", "")
        self.model_version = settings.get(f"{self.KIND}_model_version", "")
        self.names: list[str] = json.loads(settings.get(f"{self.KIND}_names", "[]"))
        self.dim = int(settings.get(f"{self.KIND}_dim", "0"))
        self._table: tuple[tuple[int, int], VectorStore] | None = None
        if self.model_version:
            self.db.load(self.name)

    # ----------------------------------------------------------------- opening
    @classmethod
    def suffix(cls) -> str:
        """What the Milvus collection of this kind adds to the vestis collection's name."""
        return f"__{cls.KIND}s"

    @classmethod
    def open(cls, collection: MilvusCollection) -> Self | None:
        """The collection's vectors of this kind, or None when it has no model for them."""
        store = cls(collection)
        return store if store.model_version else None

    @classmethod
    def configure(cls, collection: MilvusCollection, *, version: str, names: list[str], dim: int,
                  install: Callable[[], str], model_name: str, rebuild: bool) -> Self:
        """The vectors for a model of ``version`` (slots ``names`` of ``dim``), created when the
        collection has none; ``install()`` copies the model into the collection's side files and
        returns its path there. Another model's vectors are refused unless ``rebuild``."""
        current = collection.settings.get(f"{cls.KIND}_model_version", "")
        if current and current != version and not rebuild:
            raise EncoderMismatchError(f"the {cls.KIND} vectors of {collection.location} were embedded with "
                                       f"{current}; {model_name} is {version}. Rebuild them with --rebuild")
        if current != version:
            store = cls(collection)
            with collection.lock:
                collection.path.mkdir(parents=True, exist_ok=True)
                installed = install()
                store.db.drop(store.name, f"drop old {cls.KIND} vectors")
                width = len(names) * dim + (collection.colour_dim if cls.WITH_COLOUR else 0)
                store.db.create(store.name, [("vid", "INT64", {}), ("id", "VARCHAR", {"max_length": MAX_ID}),
                                             ("labels", "JSON", {})], {"vector": width},
                                f"create the {cls.KIND} collection")
                collection.set_settings({f"{cls.KIND}_model": installed, f"{cls.KIND}_model_version": version,
                                         f"{cls.KIND}_names": json.dumps(names), f"{cls.KIND}_dim": str(dim),
                                         f"{cls.KIND}_generation": str(new_generation())})
        return cls(collection)

    @property
    def lock(self) -> RankedLock:
        return self.collection.lock

    def generation(self) -> int:
        """The store's change stamp: a new one after every write of vectors, by any process."""
        return int(self.collection.setting(f"{self.KIND}_generation") or 0)

    def check_version(self, version: str) -> None:
        """Refuse query vectors from another model than the one that embedded the items."""
        if version != self.model_version:
            raise EncoderMismatchError(
                f"the {self.KIND} vectors of {self.collection.location} were embedded with {self.model_version}, "
                f"not {version}; search with that model or rebuild: {self.REBUILD_HINT}")

    # ----------------------------------------------------------------- writing
    def _vids(self) -> set[int]:
        return {int(r["vid"]) for r in self.db.query(self.name, "", ["vid"], f"read {self.KIND} vectors")}

    def missing(self) -> list[tuple[int, str, str, str]]:
        """(vid, id, source, content hash) of the items that have no vectors of this kind yet."""
        done = self._vids()
        return sorted(row for row in self.collection.sources() if row[0] not in done)

    def add(self, vids: np.ndarray, vectors: np.ndarray) -> int:
        """Store the vectors (len(vids) x slots x dim) of items, WRITE_ROWS per upsert; items that
        left the collection meanwhile are skipped. Returns how many items were written."""
        vectors = check_slot_vectors(self.KIND, vids, vectors, len(self.names), self.dim)
        rows = self.collection.rows_by_vid([int(v) for v in vids], with_colour=self.WITH_COLOUR)
        out = []
        for vid, per_slot in zip(np.asarray(vids).tolist(), vectors):
            row = rows.get(int(vid))
            if row is None:
                continue
            parts = [per_slot.reshape(-1)] + ([row["colour"]] if self.WITH_COLOUR and self.collection.colour_dim
                                              else [])
            out.append({"vid": int(vid), "id": row["id"], "labels": row["labels"],
                        "vector": np.concatenate(parts).tolist()})
        with self.lock:
            self.db.upsert(self.name, out, f"write {self.KIND} vectors")
            self.collection.set_settings({f"{self.KIND}_generation": str(new_generation())})
        return len(out)

    def forget(self, vids: list[int]) -> None:
        """Drop the rows of items that were removed or replaced."""
        if vids:
            self.db.delete(self.name, vids, f"remove {self.KIND} vectors")
            self.collection.set_settings({f"{self.KIND}_generation": str(new_generation())})

    def relabel(self, labels: dict[str, dict[str, str]]) -> None:
        """Copy new labels of items onto their rows (filters run on them)."""
        ids = list(labels)
        for start in range(0, len(ids), READ_ROWS):
            rows = self.db.call(f"read {self.KIND} vectors", self.db.client.query, self.name,
                                filter=ids_in(ids[start : start + READ_ROWS]),
                                output_fields=["vid", "id", "labels", "vector"])
            for row in rows:
                row["labels"] = labels[row["id"]]
            self.db.upsert(self.name, rows, f"write {self.KIND} labels")

    def save(self) -> None:
        """Flush the vectors to Milvus's storage."""
        self.db.flush(self.name)

    # ----------------------------------------------------------------- reading
    def embedded(self) -> int:
        """How many items have vectors of this kind."""
        return self.db.count(self.name)

    def stored_vectors(self, vid: int) -> np.ndarray | None:
        """The stored vectors (slots x dim) of one item; None when it has none yet."""
        rows = self.db.get(self.name, [int(vid)], ["vector"], f"read {self.KIND} vectors")
        if not rows:
            return None
        n = len(self.names) * self.dim
        return np.asarray(rows[0]["vector"][:n], np.float32).reshape(len(self.names), self.dim)

    def table(self) -> VectorStore:
        """Every item's vectors side by side (slots x dim per row), read again after any write."""
        with self.lock:
            now = (self.collection.generation, self.generation())
            if self._table is None or self._table[0] != now:
                rows = sorted(self.db.query(self.name, "", ["vid", "vector"], f"read {self.KIND} vectors"),
                              key=lambda r: int(r["vid"]))
                width = len(self.names) * self.dim
                vectors = np.asarray([r["vector"][:width] for r in rows], np.float32).reshape(len(rows), width)
                self._table = (now, VectorStore(width, vectors, np.array([int(r["vid"]) for r in rows], np.int64)))
            return self._table[1]

    def search_weighted(self, query: np.ndarray, want: int, *, filters: dict[str, Sequence[str]] | None = None,
                        exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray, int]:
        """Items by inner product with ``query`` (the slots' weighted query vectors side by side,
        then the weighted colour descriptor where kept), filtered in Milvus: (vids, scores, eligible)."""
        expr = self.collection.expression(filters, exclude)
        if expr is None:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), 0
        hits = self.db.search(self.name, [np.asarray(query, np.float32).tolist()], min(want, SEARCH_LIMIT), expr,
                              ["vid"], {"metric_type": "IP", "params": {}}, f"search {self.KIND} vectors")[0]
        return (np.array([int(h["entity"]["vid"]) for h in hits], np.int64),
                np.array([float(h["distance"]) for h in hits], np.float32),
                self.db.count(self.name, expr, QUERY_CONSISTENCY))


class MilvusAttributes(MilvusItemVectors):
    """The attribute vectors of a Milvus collection: the surface of
    :class:`vestis.store.attribute_index.AttributeIndex` that building and searching use."""

    KIND, WITH_COLOUR = "attribute", True
    REBUILD_HINT = "vestis attributes build --rebuild"

    @property
    def attributes(self) -> list[str]:
        return self.names

    def check_model(self, model: Any) -> None:
        self.check_version(model.version)

    def load_model(self, threads: int | None = None, backbone: Any = None) -> Any:
        from vestis.encoders.attribute_encoder import AttributeEncoder

        model = AttributeEncoder(self.collection.path / self.model_path, threads=threads, backbone=backbone)
        self.check_model(model)
        return model

    def info(self) -> dict[str, object]:
        return {"attribute_model": self.model_path, "attribute_model_version": self.model_version,
                "attributes": self.attributes, "dim": self.dim, "items_embedded": self.embedded(),
                "items": len(self.collection)}
