"""The item rows of a Milvus collection in either layout (:mod:`.layout`): the colour descriptor
beside the vector in NAME, or in NAME__colour under the item's id. Callers read and write rows
with a ``colour`` and need not know which.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from vestis.store.db import Item, NewItem, metadata_json
from vestis.store.milvus.connection import QUERY_CONSISTENCY, READ_ROWS, MilvusConnection
from vestis.store.milvus.expressions import vids_in
from vestis.store.milvus.layout import COLOUR, SPLIT


def labels_of(metadata: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(metadata as the local store keeps it, the same with every value as text for filters)."""
    clean = json.loads(metadata_json(metadata))
    return clean, {k: str(v) for k, v in clean.items()}


def as_item(row: dict[str, Any]) -> Item:
    return Item(row["id"], int(row["vid"]), row["source"], dict(row["metadata"] or {}), row["hash"],
                row["stamp"], row["catalogue"])


def item_row(item: NewItem, vid: int, colour_dim: int) -> dict[str, Any]:
    """The row of a new item under ``vid`` (with its colour, zeros when it has none)."""
    metadata, labels = labels_of(item.metadata)
    row = {"id": item.id, "vid": vid, "source": item.source, "catalogue": item.catalogue, "stamp": item.stamp,
           "hash": item.hash, "metadata": metadata, "labels": labels,
           "vector": np.asarray(item.vector, np.float32).tolist()}
    if colour_dim:
        colour = np.zeros(colour_dim, np.float32) if item.colour is None else item.colour
        row["colour"] = np.asarray(colour, np.float32).tolist()
    return row


class ItemRows:
    """The rows of the items collection ``name`` (and of its colour collection in the split layout)."""

    def __init__(self, db: MilvusConnection, name: str, colour_dim: int, layout: str) -> None:
        self.db, self.name, self.colour_dim = db, name, colour_dim
        self.split = bool(colour_dim) and layout == SPLIT
        self.db.load(name)
        if self.split:
            self.db.load(name + COLOUR)

    def _fields(self, fields: Sequence[str], colour: bool) -> list[str]:
        return [*fields, *(["colour"] if colour and self.colour_dim and not self.split else [])]

    def _add_colours(self, rows: list[dict[str, Any]], colours: dict[str, Any] | None = None
                     ) -> list[dict[str, Any]]:
        """``rows`` (with ``id``) given their colour from the colour collection (split layout);
        ``colours``: id -> colour already read."""
        if self.split and rows:
            if colours is None:
                colours = {r["id"]: r["colour"] for r in self.db.get(self.name + COLOUR, [r["id"] for r in rows],
                                                                      ["id", "colour"], "read colours")}
            for row in rows:  # an item is written after its colour: a missing one is a zero descriptor
                row["colour"] = colours.get(row["id"], [0.0] * self.colour_dim)
        return rows

    def get(self, ids: Sequence[str], fields: Sequence[str], colour: bool = False,
            what: str = "read items") -> list[dict[str, Any]]:
        """The rows of items ``ids`` (unknown ids skipped); ``colour``: with their colour."""
        rows = self.db.get(self.name, list(ids), self._fields(fields, colour), what)
        return self._add_colours(rows) if colour else rows

    def by_vid(self, vids: Sequence[int], fields: Sequence[str], colour: bool = False) -> dict[int, dict[str, Any]]:
        """vid -> the row (``fields`` and ``vid``, with its colour if asked) of each item among ``vids``
        (read at the query path's consistency: these are a search's hits)."""
        vids = [int(v) for v in vids]
        found: dict[int, dict[str, Any]] = {}
        for start in range(0, len(vids), READ_ROWS):
            rows = self.db.call("read items", self.db.client.query, self.name,
                                filter=vids_in(vids[start : start + READ_ROWS]),
                                output_fields=self._fields(["vid", *fields], colour),
                                consistency_level=QUERY_CONSISTENCY)
            found.update((int(r["vid"]), r) for r in (self._add_colours(rows) if colour else rows))
        return found

    def scan(self, fields: Sequence[str], expr: str = "", colour: bool = False) -> Iterator[dict[str, Any]]:
        """Every row matching ``expr``, page by page (with colour: the colours are read in one scan)."""
        rows = self.db.query(self.name, expr, self._fields(fields, colour))
        if not (colour and self.split):
            yield from rows
            return
        colours = {r["id"]: r["colour"] for r in self.db.query(self.name + COLOUR, "", ["id", "colour"],
                                                                "read colours")}
        for row in rows:
            yield self._add_colours([row], colours)[0]

    def search(self, vectors: list[list[float]], limit: int, expr: str, fields: Sequence[str],
               params: dict[str, Any], colour: bool = False) -> list[list[dict[str, Any]]]:
        """For each of ``vectors``, the ``limit`` best hits by ``params``'s metric (each with
        ``distance`` and its ``entity``: ``fields``, and the colour if asked)."""
        hits = self.db.search(self.name, vectors, limit, expr, self._fields(["id", *fields], colour), params)
        if colour:
            self._add_colours([h["entity"] for one in hits for h in one])
        return hits

    def write(self, rows: list[dict[str, Any]], what: str = "write items") -> None:
        """Upsert whole rows (with ``colour`` where the collection has one); in the split layout the
        colours go first, so a committed item always has its colour."""
        if self.split:
            self.db.upsert(self.name + COLOUR, [{"id": r["id"], "colour": r.pop("colour")} for r in rows
                                                if "colour" in r], "write colours")
        self.db.upsert(self.name, rows, what)

    def delete(self, ids: list[str]) -> None:
        self.db.delete(self.name, ids, "remove items")
        if self.split:
            self.db.delete(self.name + COLOUR, ids, "remove colours")

    def flush(self) -> None:
        self.db.flush(self.name)
        if self.split:
            self.db.flush(self.name + COLOUR)

    def count(self, expr: str = "", consistency: str = "Strong") -> int:
        return self.db.count(self.name, expr, consistency)

    def label_counts(self) -> dict[str, dict[str, int]]:
        """Metadata key -> value -> how many items have it."""
        counts: dict[str, dict[str, int]] = {}
        for row in self.scan(["labels"]):
            for key, value in (row["labels"] or {}).items():
                column = counts.setdefault(key, {})
                column[value] = column.get(value, 0) + 1
        return counts

