"""The real Milvus server's session fixture, defined once for every store test: a fixture imported
into two test modules would be two fixtures, and two servers would start."""

from tests.store.milvus_server import milvus_server  # noqa: F401
