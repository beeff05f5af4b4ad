"""The gateway: `create_server()` is what uvicorn runs, the FastAPI application of
`create_app()` behind the fast paths for agents' polls (polls.py) and the fleet's reports
(writes.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from shared.access_keys import AccessKeys
from shared.auth import VerifiedTokens
from shared.bus import Bus, Requester
from shared.config import Settings, get_settings
from shared.heap import freeze_startup_objects
from shared.logs import configure_logging
from shared.service import wait_until_up
from shared.telemetry import exporting, setup_tracing

from . import commands, console, errors, scripts, sources, tasks, zstack
from .deps import Senders
from .feed import EventFeed
from .live import LiveEvents
from .lookups import NextCommandLookups
from .middleware import LimitBody, TraceContext
from .next_commands import NextCommands
from .polls import AnsweredPolls
from .writes import AnsweredWrites

DESCRIPTION = """Rehost's HTTP API, wire-compatible with Huawei Cloud SMS (`/v3`),
Huawei Cloud COC (`/v1/job`) and ZStack (`/zstack/v1`).

Authenticate with `X-Auth-Token` (SMS, COC) or `Authorization: OAuth <token>` (ZStack):
an HS256 JWT with the claims `sub`, `domain_id`, `actions` and `exp`.
"""


def create_server(settings: Settings | None = None) -> AnsweredPolls:
    app = create_app(settings)
    # While spans are exported, the framework's instrumentation traces every write.
    return AnsweredPolls(app if exporting() else AnsweredWrites(app))


UNTRACED_URLS = r"healthz,readyz,/v3/sources/[^/?]+/command(\?|$)"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging("gateway", settings.log_format, settings.log_level)
    setup_tracing("gateway")
    if settings.insecure_secret:
        structlog.get_logger(__name__).warning(
            "auth.development_secret",
            message="REHOST_AUTH_SECRET is not set: tokens are signed with the published "
            "development secret and ANYONE CAN MINT THEM. Set REHOST_AUTH_SECRET, or "
            "REHOST_DEVELOPMENT=true on a development machine.",
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bus = Bus(settings.amqp_url, "rehost-gateway")
        await wait_until_up("broker", bus.connect)
        requester = Requester(bus, settings.reply_timeout, settings.max_in_flight)
        await requester.start()
        next_commands = NextCommands()
        feed = EventFeed(bus)
        for event_type, handler in next_commands.handlers().items():
            feed.on(event_type, handler)
        feed.on_reset(next_commands.reset)
        live = LiveEvents(feed)  # before the feed starts: it taps every event
        await feed.start()
        freeze_startup_objects()
        app.state.bus = bus
        app.state.requester = requester
        app.state.next_commands = next_commands
        app.state.lookups = NextCommandLookups(requester, next_commands)
        app.state.senders = Senders.over(requester)
        app.state.feed = feed
        app.state.live = live
        yield
        await bus.close()

    app = FastAPI(
        title="Rehost",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # FastAPI's own telemetry would trace and measure every request a second time beside
        # the OpenTelemetry instrumentation below (it was a tenth of a register's cost).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.access_keys = AccessKeys(settings.access_keys or None)
    app.state.tokens = VerifiedTokens(settings.auth_secret)
    errors.install(app)
    app.include_router(sources.router)
    app.include_router(commands.router)
    app.include_router(tasks.router)
    app.include_router(scripts.router)
    app.include_router(zstack.router)
    app.include_router(console.router)
    app.mount("/console/static", StaticFiles(directory=str(console.STATIC)), name="console")

    @app.get("/healthz", tags=["health"], summary="Liveness: the process serves HTTP")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", tags=["health"], summary="Readiness: the broker connection is up")
    async def readyz() -> JSONResponse:
        bus: Bus | None = getattr(app.state, "bus", None)
        feed: EventFeed | None = getattr(app.state, "feed", None)
        ready = bool(bus and bus.ready and feed and feed.consuming)
        return JSONResponse(status_code=200 if ready else 503, content={"ready": ready})

    app.add_middleware(LimitBody, max_bytes=settings.max_body_bytes)
    if exporting():
        # The HTTP server span (and request metrics) every command of the call belongs to.
        # Not for agents' polls: most are answered from the read model, with nothing to
        # follow (one that asks the owner is traced from its publish).
        FastAPIInstrumentor.instrument_app(app, excluded_urls=UNTRACED_URLS)
    else:
        app.add_middleware(TraceContext)
    return app
