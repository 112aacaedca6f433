"""The HTTP API and web page (``vestis serve``): :func:`create_app` builds it, :func:`serve` runs it."""

from vestis.api.app import create_app
from vestis.api.server import serve

__all__ = ["create_app", "serve"]
