"""The command-result process: `rehost command-result`."""

from __future__ import annotations

from shared.service import ServiceDefinition

from . import channels, results
from .handlers import CommandResultHandlers

COMMAND_RESULT = ServiceDefinition(
    name="command-result",
    bindings=("sms.command.*",),
    collections={channels.COLLECTION: (), results.COLLECTION: ("server_id",)},
    handlers=lambda store, requester, _settings: CommandResultHandlers(store, requester),
    health_port=lambda settings: settings.command_result_health_port,
)
