"""HTTP-facing errors: each names the status it answers with, so one handler maps every
:class:`~vestis.errors.VestisError` to a 4xx response with a clear message."""

from __future__ import annotations

from vestis.encoders.regions import RegionModelsMissingError
from vestis.errors import (
    CatalogueError,
    DuplicateItemError,
    EncoderMismatchError,
    ImageError,
    NotFoundError,
    VestisError,
)

from vestis.store.guards import DiskFullError


class ApiError(VestisError):
    """A request the API refuses; ``status`` is the HTTP status code of the answer."""

    status = 400


class BadRequestError(ApiError):
    status = 400


class UnauthorizedError(ApiError):
    status = 401


class ForbiddenError(ApiError):
    status = 403


class ConflictError(ApiError):
    status = 409


class PayloadTooLargeError(ApiError):
    status = 413


class UnsupportedMediaTypeError(ApiError):
    status = 415


class InvalidRequestError(ApiError):
    """Well-formed but unusable input (unknown attribute or filter column, bad metadata)."""

    status = 422


_STATUS_BY_TYPE: list[tuple[type[VestisError], int]] = [
    (NotFoundError, 404),
    (ImageError, 422),  # not an image, truncated, over the pixel limit
    (CatalogueError, 404),  # a source file that is gone or unreadable
    (EncoderMismatchError, 409),
    (DuplicateItemError, 409),
    (DiskFullError, 507),  # Insufficient Storage: the write failed, nothing was half-written
    (RegionModelsMissingError, 503),  # the server's set-up lacks the pose models: not the request's fault
]


def status_of(error: VestisError) -> int:
    """The HTTP status for a library or API error (422 for any other VestisError: invalid input)."""
    if isinstance(error, ApiError):
        return error.status
    for kind, status in _STATUS_BY_TYPE:
        if isinstance(error, kind):
            return status
    return 422
