"""``vestis reindex`` on Milvus: the new vectors go to a new physical items collection
``NAME__rK`` beside the one in use, and one ``alter_alias`` makes NAME stand for it. The encoder
settings of each physical collection are keyed by its name (:data:`.layout.PER_PHYSICAL`), written
before the alias moves, so the alias switches vectors and settings together; a process notices at
its next ``refresh()`` (the engine's, before each search). Item rows are copied whole (vid, colour,
metadata) with the new vector, so per-item vectors keyed by vid and the split layout's colours
stay valid.

Until its first re-embedding a collection is the physical collection NAME, and an alias cannot
take a name a collection holds: the first switch records ``migrating_to``, drops NAME and creates
the alias. For those milliseconds NAME does not exist; a kill between the two leaves
``migrating_to``, and opening the collection creates the alias (:func:`heal_alias`). ``keep_old``
then first copies NAME's rows to ``NAME__r0``, the physical collection a rollback moves the alias
back to.

Writes through the same handle wait for the switch (its lock), and every write re-resolves the
alias and refuses vectors of another encoder than the one it stands for. A write from another handle
that lands in the old physical collection between the last check and the alias move is found after
the move (a vid the old collection gained since the check) and embedded into the new one.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from vestis.errors import VestisError
from vestis.index.auto import is_auto
from vestis.store.db import Item
from vestis.locks import RankedLock
from vestis.store.milvus.connection import MilvusConnection
from vestis.store.milvus.items import as_item
from vestis.store.milvus.layout import (ITEM_FIELDS, ITEM_SCHEMA, ONE, Settings, auto_index, build_params, keyed,
                                        new_generation, settings_of)
from vestis.store.reindex_stage import EncoderSettings

TARGET, PREVIOUS_PHYSICAL, MIGRATING = "reindex_target", "previous_physical", "migrating_to"
SERIAL = "physical_serial"  # the K of the last NAME__rK; unset until the first re-embedding


def heal_alias(db: MilvusConnection, name: str, stored: dict[str, str]) -> str:
    """The physical collection ``name`` stands for (read from Milvus once a re-embedding began),
    after finishing a switch of a pre-alias collection killed between dropping NAME and creating
    the alias."""
    if not stored.get(SERIAL):  # never re-embedded: NAME is the collection itself
        return name
    if stored.get(MIGRATING) and not db.has(name):
        db.create_alias(name, stored[MIGRATING])
    return db.physical(name)


class AliasedCollection(Protocol):
    """What the stage uses of :class:`~vestis.store.milvus.collection.MilvusCollection`."""

    db: MilvusConnection
    name: str
    physical: str  # the physical collection the name stands for now
    dim: int
    colour_dim: int
    layout: str
    location: Any

    @property
    def index_spec(self) -> str: ...
    @property
    def lock(self) -> RankedLock: ...


class MilvusStage:
    """The physical collection a re-embedding fills (see the module docstring)."""

    def __init__(self, collection: AliasedCollection, target: EncoderSettings, *, from_previous: bool = False) -> None:
        self.coll, self.db, self.target = collection, collection.db, target
        self.store = Settings(self.db, collection.name)
        self.source = collection.physical  # the physical collection in use
        self.colour = bool(collection.colour_dim) and collection.layout == ONE  # colour beside the vector
        self.settled: set[int] = set()  # after the alias moved: the vids the old collection held at the check
        self.switched = False
        self.kept_copy = ""  # NAME__r0, where a pre-alias collection's vectors are kept for a rollback
        stored = self.store.read()
        previous = stored.get(PREVIOUS_PHYSICAL, "")
        if from_previous:
            if not previous or not self.db.has(previous):
                raise VestisError(f"{collection.location} kept no earlier vectors to roll back to")
            self.physical = previous
        else:
            self.physical = stored.get(TARGET, "")
            if not (self.physical and self.physical not in (self.source, previous) and self.db.has(self.physical)
                    and EncoderSettings.from_settings(settings_of(stored, self.physical)) == target):
                if self.physical not in ("", self.source, previous):
                    self.db.drop(self.physical, "drop vectors staged for another encoder")
                serial = int(stored.get(SERIAL, "0")) + 1
                self.physical = f"{collection.name}__r{serial}"
                self._create(self.physical, target.dim)
                self.store.write({SERIAL: str(serial), TARGET: self.physical,
                                  **keyed({**target.as_settings(), "index_active": "exact"}, self.physical)})
        self.db.load(self.physical)

    def _create(self, name: str, dim: int) -> None:
        self.db.drop(name, "drop a half-created collection")
        vectors = {"vector": dim, **({"colour": self.coll.colour_dim} if self.colour else {})}
        self.db.create(name, ITEM_SCHEMA, vectors, "create a collection for the new vectors")

    def _vids(self, name: str) -> dict[int, str]:
        return {int(r["vid"]): r["id"] for r in self.db.query(name, "", ["vid", "id"], "read the items' vids")}

    def _rows(self, ids: list[str]) -> list[dict[str, Any]]:
        """Whole rows of ``ids`` in the collection in use (colour included where it lies beside)."""
        return self.db.get(self.source, ids, [*ITEM_FIELDS, "labels", "vector", *(["colour"] if self.colour else [])])

    def staged(self) -> int:
        return self.db.count(self.physical)

    def missing(self) -> list[Item]:
        have = self._vids(self.physical)
        ids = [i for v, i in self._vids(self.source).items() if v not in have and v not in self.settled]
        return sorted((as_item(r) for r in self._rows(ids)), key=lambda it: it.vid)

    def add(self, items: list[Item], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, np.float32)
        if vectors.shape != (len(items), self.target.dim):
            raise VestisError(f"new vectors must be {len(items)} x {self.target.dim}, got {vectors.shape}")
        rows = {r["id"]: r for r in self._rows([it.id for it in items])}
        out = []
        for item, vector in zip(items, vectors):
            row = rows.get(item.id)
            if row is not None and int(row["vid"]) == item.vid:  # else replaced or removed since: missing() says
                out.append({**row, "vector": vector.tolist()})
        self.db.upsert(self.physical, out, "write the new vectors")

    def switch(self, keep_old: bool) -> bool:
        with self.coll.lock:
            if not self.switched:
                have, source = self._vids(self.physical), self._vids(self.source)
                gone = [i for v, i in have.items() if v not in source]
                if gone:
                    self.db.delete(self.physical, gone, "drop the new vectors of removed items")
                if source.keys() - have.keys():
                    return False
                self._index()
                self._move_alias(keep_old, set(source))
            if self.missing():  # another process wrote to the old collection between the check and the move
                return False
            self._finish(keep_old)
        return True

    def _index(self) -> None:
        """Build the index ``auto`` (or the collection's spec) wants, while nothing reads the collection."""
        self.db.flush(self.physical)
        spec = self.coll.index_spec
        active = settings_of(self.store.read(), self.physical).get("index_active", "exact")
        wanted = auto_index(self.staged(), self.target.dim, active) if is_auto(spec) else spec
        if wanted != active:
            kind, params = build_params(wanted)
            self.db.rebuild_index(self.physical, kind, params)
            self.store.write(keyed({"index_active": wanted}, self.physical))

    def _move_alias(self, keep_old: bool, checked: set[int]) -> None:
        name = self.coll.name
        if self.source == name:  # made before aliases: NAME must go before the alias can take its name
            if keep_old:
                self._keep_pre_alias()
            self.store.write({MIGRATING: self.physical})
            self.db.drop(name, "drop the collection replaced by an alias")
            self.db.create_alias(name, self.physical)
            self.store.write({MIGRATING: ""})
            self.settled, self.source = set(), self.physical
        else:
            self.db.move_alias(name, self.physical)
            self.settled = checked
        self.store.write({"generation": str(new_generation())})
        self.switched = True

    def _keep_pre_alias(self) -> None:
        """Copy the pre-alias collection NAME to ``NAME__r0`` with its settings, for a rollback."""
        kept = f"{self.coll.name}__r0"
        self._create(kept, self.coll.dim)
        ids = list(self._vids(self.source).values())
        for start in range(0, len(ids), 1000):
            self.db.upsert(kept, self._rows(ids[start : start + 1000]), "keep the old vectors")
        self.db.flush(kept)
        old = settings_of(self.store.read(), self.source)
        self.store.write(keyed({k: old[k] for k in EncoderSettings.keys() if k in old}, kept))
        self.store.write(keyed({"index_active": "exact"}, kept))
        self.kept_copy = kept

    def _finish(self, keep_old: bool) -> None:
        """Drop what the switch left behind: the old vectors, unless kept for a rollback."""
        stored = self.store.read()
        old = self.kept_copy or (self.source if self.source != self.physical else "")
        previous = stored.get(PREVIOUS_PHYSICAL, "")
        kept = old if keep_old else ""
        for name in {previous, old} - {kept, self.physical, ""}:
            self.db.drop(name, "drop the old vectors")
        self.store.write({TARGET: "", PREVIOUS_PHYSICAL: kept})
