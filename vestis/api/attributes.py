"""Parsing of the ``attrs`` request field (RPF: ``"sleeve length; collar design"``).

This is the one place the API turns ``attrs`` into attribute weights: free text or a list of
parts, matched to the collection's attributes by :func:`vestis.search.attributes.parse_attributes`
(separators, synonyms, ``name:weight``). :meth:`Service.attribute_names` lists the attributes the
collection's attribute index offers (none without one), and every route validates ``attrs`` here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from vestis.api.errors import InvalidRequestError
from vestis.errors import VestisError
from vestis.encoders.text import TextEncoder
from vestis.search.attributes import nearest_attribute, parse_attributes, split_attribute_text


def parse_attrs(raw: str | Sequence[str] | None, valid: Sequence[str],
                text_encoder: Callable[[], TextEncoder] | None = None) -> dict[str, float]:
    """Attribute names -> weights from ``"a; b:2"`` or ``["a", "b"]`` (blank entries ignored); a
    name that matches no attribute is read as the nearest one in meaning when ``text_encoder``
    (called only then) gives the text encoder; raises InvalidRequestError (422) naming the valid
    attributes."""
    texts = [raw] if isinstance(raw, str) else list(raw or [])
    if not any(split_attribute_text(str(t)) for t in texts):
        return {}
    if not valid:
        raise InvalidRequestError(
            "attribute search is not available for this collection; valid attributes: []"
        )
    try:
        if text_encoder is None:
            return parse_attributes(texts, valid)
        return parse_attributes(texts, valid, resolve=lambda part: (nearest_attribute(part, valid, text_encoder())
                                                                     or (None,))[0])
    except VestisError as e:
        raise InvalidRequestError(str(e)) from None
