"""Fixtures shared by the store tests.

The real Milvus server's session fixture is defined once here: a fixture imported into two test
modules would be two fixtures, and two servers would start."""

import pytest

from tests.store.milvus_server import milvus_server  # noqa: F401
from vestis.encoders import get_encoder


@pytest.fixture(scope="session")
def old_encoder():
    """The encoder a reindex test's collection starts with."""
    return get_encoder("efficientnet-lite0")


@pytest.fixture(scope="session")
def new_encoder():
    """The encoder a reindex test moves its collection to."""
    return get_encoder("efficientnet-lite0-int8")
