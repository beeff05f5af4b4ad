"""ASGI middleware: the request-body size and nesting limits, and each request's trace."""

from __future__ import annotations

import asyncio
import contextlib
import json
from contextvars import Token

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.contracts.nesting import MAX_DEPTH, nests_deeper
from shared.errors import ApiError, SmsCode
from shared.telemetry import request_context

from .errors import family_for

# A refused body is read and dropped before the answer, up to these bounds: closing a
# connection with unread data makes the kernel reset it, and the client would see the
# reset, not the 413 (seen in tests with a 2 MB body).
DRAIN_FACTOR = 8  # no more than this many times the limit is read
DRAIN_SECONDS = 5.0


class LimitBody:
    """Refuses bodies above `max_bytes` before they are parsed, declared or streamed, and
    bodies nested deeper than the stores keep (400) before any parser recurses into them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_limit = DRAIN_FACTOR * max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            if int(declared) <= self.drain_limit:
                await _drain(receive, self.drain_limit)
            await self._refuse(scope, send)
            return
        chunks: list[bytes] = []
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                if message.get("more_body"):
                    await _drain(receive, self.drain_limit - seen)
                # An HTTPException, which FastAPI lets through from reading a body (any other
                # error there becomes its own 400); the app answers it in the family's shape.
                raise HTTPException(413, self._error().message)
            chunks.append(chunk)
            if not message.get("more_body") and nests_deeper(b"".join(chunks)):
                raise HTTPException(400, f"The request body nests deeper than {MAX_DEPTH} levels.")
            return message

        await self.app(scope, counting_receive, send)

    def _error(self) -> ApiError:
        return ApiError(SmsCode.BODY_TOO_LARGE, f"The request body exceeds {self.max_bytes} bytes.")

    async def _refuse(self, scope: Scope, send: Send) -> None:
        error = self._error().in_family(family_for(scope["path"]))
        payload = json.dumps(error.body()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


async def _drain(receive: Receive, budget: int) -> None:
    """Reads and drops the rest of the body: at most `budget` bytes, for `DRAIN_SECONDS`."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_SECONDS):
            while budget > 0:
                message = await receive()
                budget -= len(message.get("body", b""))
                if message["type"] != "http.request" or not message.get("more_body"):
                    return


class TraceContext:
    """Each request in a trace of its own (or its caller's), when no span is exported: what
    the OpenTelemetry middleware would give its logs and messages, for a fraction of its
    cost (it was a fifth of a small request's, with nothing recorded)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = enter_request_trace(scope)
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)


def enter_request_trace(scope: Scope) -> Token[Context]:
    """Makes the request's trace (its caller's `traceparent`, or a new one) the current
    context; the token detaches it."""
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in (b"traceparent", b"tracestate")
    }
    return otel_context.attach(request_context(carrier))
