"""Which model is the body of which routing key: the message contract integrators read."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from shared.contracts.sources import (
    ListSources,
    SourceDeleted,
    SourceRegistered,
    SourceServerBody,
    SourceServerRef,
    SourceUpdated,
)
from shared.envelope import Event, Reply

COMMANDS: dict[str, type[BaseModel]] = {
    "sms.source.register": SourceServerBody,
    "sms.source.delete": SourceServerRef,
    "sms.source.get": SourceServerRef,
    "sms.source.list": ListSources,
}

EVENTS: dict[str, type[BaseModel]] = {
    "source.registered": SourceRegistered,
    "source.updated": SourceUpdated,
    "source.deleted": SourceDeleted,
}


def json_schemas() -> dict[str, Any]:
    return {
        "envelope": {"event": Event.model_json_schema(), "reply": Reply.model_json_schema()},
        "commands": {key: model.model_json_schema() for key, model in COMMANDS.items()},
        "events": {key: model.model_json_schema() for key, model in EVENTS.items()},
    }
