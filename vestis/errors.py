"""Exceptions shared by every layer; each carries a message meant for the user."""


class VestisError(Exception):
    """Base class: a clear, user-facing error (the CLI prints it without a traceback)."""


class ImageError(VestisError):
    """An image could not be decoded (not an image, truncated, too large, unreadable)."""


class CatalogueError(VestisError):
    """A catalogue source is missing, malformed or in an unknown format."""


class EncoderMismatchError(VestisError):
    """A collection was built with one encoder and queried with another."""


class IndexSpecError(VestisError):
    """An index spec string names no known backend or has bad parameters."""


class CollectionDamagedError(VestisError):
    """A collection's database exists but cannot be read (truncated, overwritten)."""


class NotFoundError(VestisError):
    """An item id is not in the collection."""


class DuplicateItemError(VestisError):
    """An item with this id is already in the collection."""
