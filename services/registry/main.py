"""The registry process: `rehost registry`."""

from __future__ import annotations

from shared.service import ServiceDefinition

from .handlers import RegistryHandlers
from .sources import COLLECTION

REGISTRY = ServiceDefinition(
    name="registry",
    bindings=("sms.source.*",),
    collections={COLLECTION: ("state", "ip", "migration_cycle", "connected")},
    handlers=lambda store, requester, _settings: RegistryHandlers(store, requester),
    health_port=lambda settings: settings.registry_health_port,
)
