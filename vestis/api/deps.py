"""Dependencies shared by the routes: the service, the API-key check, body validation, uploads."""

from __future__ import annotations

import hmac
import json
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from vestis.api.errors import InvalidRequestError, UnauthorizedError
from vestis.api.service import Service

M = TypeVar("M", bound=BaseModel)

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The server's API key.")
_bearer = HTTPBearer(auto_error=False, description="The server's API key as a bearer token.")


async def get_service(request: Request) -> Service:
    """The app's service. Async, so FastAPI calls it in the event loop: a plain function would cost
    each request a hop to a worker thread and back (milliseconds when the cores are busy)."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


async def require_api_key(  # async for the same reason as get_service
    service: ServiceDep,
    api_key: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    """Writes need the key (``X-API-Key`` or ``Authorization: Bearer``) when the server has one."""
    if service.api_key is None:
        return
    given = api_key or (bearer.credentials if bearer else None)
    if not given:
        raise UnauthorizedError("this server needs an API key for writes: send it as X-API-Key or Bearer token")
    if not hmac.compare_digest(given.encode(), service.api_key.encode()):
        raise UnauthorizedError("wrong API key")


def validate(model: type[M], data: object) -> M:
    """Validate data the route parsed itself, answering 422 in FastAPI's own format on failure."""
    try:
        if isinstance(data, bytes):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False, include_context=False, include_input=False)) from None


def json_field(text: str, field: str, example: str, what: str = "JSON") -> Any:
    """The JSON value of a form field, or 422 naming the field and an example: malformed JSON, an
    integer too long to convert and nesting deeper than the parser's recursion limit all count as
    invalid input, never as a server error."""
    try:
        return json.loads(text)
    except RecursionError:
        reason = "it is nested too deeply"
    except ValueError as e:  # JSONDecodeError, and the digit limit of int conversion
        reason = e.msg if isinstance(e, json.JSONDecodeError) else "a number in it is too long"
    raise InvalidRequestError(f"{field} must be {what}, e.g. {example} ({reason})")


async def read_upload(upload: UploadFile, service: Service) -> bytes:
    """An uploaded file's bytes, refusing (413) one over the size limit without reading it all."""
    if upload.size is not None:
        service.check_size(upload.size, "the uploaded file")
    data = await upload.read(service.max_upload_bytes + 1)
    service.check_size(len(data), "the uploaded file")
    return data
