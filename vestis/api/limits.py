"""A request-body size limit enforced while the body is received, before anything is buffered.

A declared ``Content-Length`` over the limit is answered 413 at once; a body streamed without
one (chunked) is counted as it arrives and the request fails with 413 as soon as it passes the
limit, so no route ever holds more than ``limit`` bytes of one request.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _message(self) -> str:
        return f"request body is larger than the limit of {self.limit:,} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await JSONResponse({"detail": self._message()}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Starlette and FastAPI re-raise an HTTPException met while reading the body.
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited_receive, send)
