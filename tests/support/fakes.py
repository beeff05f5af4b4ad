"""Fakes for handler tests without a broker: a requester that answers from a script."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.envelope import Reply

Answer = Reply | Callable[[dict[str, Any]], Reply]


@dataclass
class ScriptedRequester:
    """Answers each routing key as scripted (a reply, or a function of the request's body)
    and keeps every request and told command it was sent: (routing key, body, message id)."""

    answers: dict[str, Answer]
    sent: list[tuple[str, dict[str, Any], str | None]] = field(default_factory=list)

    async def request(
        self,
        routing_key: str,
        body: bytes,
        *,
        domain_id: str,
        actor: str = "",
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> Reply:
        decoded = json.loads(body)
        self.sent.append((routing_key, decoded, message_id))
        answer = self.answers[routing_key]
        return answer(decoded) if callable(answer) else answer

    async def tell(
        self,
        routing_key: str,
        body: bytes,
        *,
        domain_id: str,
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.sent.append((routing_key, json.loads(body), message_id))

    def keys(self) -> list[str]:
        return [key for key, _, _ in self.sent]
