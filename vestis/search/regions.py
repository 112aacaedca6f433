"""Shop the look, in the engine: the garment regions of a query photo of a person
(:mod:`vestis.encoders.regions`), each searched as a query of its own.

A region searches the matching part of the catalogue where the collection's labels name it
(:data:`REGION_SCOPES`: footwear for the shoes, topwear for the top, ...), unless the query turns
that off (``region_scope``) or filters the same column itself; a catalogue without those labels is
searched whole. Within its scope a region's page is shared between the parts it may show (a top or
a dress), as the catalogue's own labelled vectors judge it: :mod:`vestis.search.parts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vestis.encoders.regions import Region
from vestis.errors import VestisError
from vestis.search.results import SearchResponse

# region -> column -> values: the part of a catalogue a region searches (Fashion Product Images'
# labels; a column or value the collection lacks is ignored)
REGION_SCOPES: dict[str, dict[str, list[str]]] = {
    "top": {"subCategory": ["Topwear", "Dress", "Apparel Set"]},
    "bottom": {"subCategory": ["Bottomwear"]},
    "shoes": {"masterCategory": ["Footwear"]},
    "person": {"masterCategory": ["Apparel"]},
}


class NoRegionError(VestisError):
    """A region was asked for by name and the photo does not show it."""


@dataclass
class RegionHits:
    """One region of the query photo and its results."""

    region: Region
    response: SearchResponse
    scope: dict[str, list[str]]

    def as_dict(self) -> dict[str, object]:
        return {"name": self.region.name, "box": list(self.region.box), "score": round(self.region.score, 4),
                "scope": self.scope, **self.response.as_dict()}


def region_scope(name: str, filters: dict[str, list[str]], columns: dict[str, Sequence[tuple[str, int]]]
                 ) -> dict[str, list[str]]:
    """The filters that keep a region's search to its part of the catalogue (see the module
    docstring): only columns the query does not filter, and values the collection holds."""
    scope = {}
    for column, values in REGION_SCOPES.get(name, {}).items():
        held = {value for value, _ in columns.get(column, ())}
        present = [v for v in values if v in held]
        if present and column not in filters:
            scope[column] = present
    return scope


def missing_region_message(name: str, found_person: bool) -> str:
    if not found_person:
        return "no person found in the photo: search it whole (region none) or send a photo of a person"
    return f"the photo shows no {name} region (the person may be cut off): try region auto or person"
