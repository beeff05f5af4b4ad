"""One connection to a RabbitMQ cluster: to whichever of its nodes answers.

`REHOST_AMQP_URL` (and an agent's URL) may name several nodes, comma-separated. A
process connects to the first that answers; when its node goes, aio-pika's robust
connection reconnects, and each attempt goes to the next node in turn, so it moves to a
live one instead of waiting for the dead one. Once connected again, the robust channels
declare their exchanges and queues again and consume again, as after any reconnect.
What was in flight on the lost connection fails on its own: a publish not yet confirmed
raises (the gateway answers 503, a service holds the message, the outbox relay leaves
the event for its next sweep), a delivery not yet acked is delivered again (the
duplicate guard absorbs it).
"""

from __future__ import annotations

from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aio_pika.robust_connection import RobustConnection
from yarl import URL

log = structlog.get_logger(__name__)


def node_urls(urls: str) -> list[str]:
    """The nodes a setting names: one URL, or several separated by commas."""
    found = [url.strip() for url in urls.split(",") if url.strip()]
    if not found:
        raise ValueError("no AMQP URL given")
    return found


class FailoverConnection(RobustConnection):
    """A robust connection that tries the nodes in turn, starting after the one it lost."""

    def __init__(self, url: str | URL, **kwargs: Any) -> None:
        self.nodes = [URL(u) for u in node_urls(str(url))]
        self._next = 0
        super().__init__(self.nodes[0], **kwargs)

    # aio-pika's robust connection makes each attempt through this (name-mangled) method;
    # overriding it is the one place where every attempt, first or reconnect, passes.
    async def _RobustConnection__connect_transport(self) -> None:  # noqa: N802
        failure: BaseException | None = None
        for _ in range(len(self.nodes)):
            self.url = self.nodes[self._next % len(self.nodes)]
            self._next += 1
            try:
                await super()._RobustConnection__connect_transport()  # type: ignore[misc]
            except CONNECTION_EXCEPTIONS as exc:
                failure = exc
                log.warning("broker.node_unreachable", node=str(self), error=repr(exc))
                continue
            if len(self.nodes) > 1:
                log.info("broker.connected", node=str(self))
            return
        assert failure is not None
        raise failure


async def connect(urls: str, name: str, timeout: float = 10.0) -> AbstractRobustConnection:
    return await aio_pika.connect_robust(
        urls,
        timeout=timeout,
        client_properties={"connection_name": name},
        connection_class=FailoverConnection,
    )
