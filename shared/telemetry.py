"""OpenTelemetry bootstrap and W3C context carried in AMQP headers.

A tracer provider is always installed so that trace ids exist and flow from the
gateway through the broker to the consumers; spans are exported only when the
standard `OTEL_TRACES_EXPORTER` variable names an exporter.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

_configured = False


def setup_tracing(service: str) -> None:
    global _configured
    if _configured:
        return
    _configured = True
    name = os.environ.get("OTEL_SERVICE_NAME", f"rehost-{service}")
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if os.environ.get("OTEL_TRACES_EXPORTER", "none") == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """Adds `traceparent`/`tracestate` of the current span to AMQP headers."""
    propagate.inject(headers)
    return headers


def extract_context(headers: Mapping[str, Any] | None) -> Context:
    carrier = {
        k: v.decode() if isinstance(v, bytes) else str(v) for k, v in (headers or {}).items()
    }
    return propagate.extract(carrier)


def current_trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""
