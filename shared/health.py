"""Liveness and readiness over HTTP for processes that serve no other HTTP.

`GET /healthz` answers 200 while the event loop runs; `GET /readyz` answers 200
only when the process's check passes (broker connected, store answering, its queue
consumed), for Kubernetes probes and for tests that wait for a service to be up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable

Check = Callable[[], Awaitable[dict[str, bool]]]


class HealthServer:
    def __init__(self, host: str, port: int, check: Check) -> None:
        self.host = host
        self.port = port
        self.check = check
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            path = request.split(b" ")[1].decode() if request.count(b" ") >= 2 else ""
            status, body = await self._answer(path)
            payload = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, path: str) -> tuple[str, dict[str, object]]:
        if path == "/healthz":
            return "200 OK", {"status": "alive"}
        if path == "/readyz":
            checks = await self.check()
            ok = all(checks.values())
            return ("200 OK" if ok else "503 Service Unavailable"), {"ready": ok, **checks}
        return "404 Not Found", {"error": "not found"}
