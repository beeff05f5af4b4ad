"""OpenTelemetry bootstrap, configured only by the standard `OTEL_*` variables.

A tracer provider is always installed, so trace ids exist and the W3C context
flows through AMQP headers; spans are recorded and leave the process only when
`OTEL_TRACES_EXPORTER` names an exporter (`otlp` or `console`), and metrics only
when `OTEL_METRICS_EXPORTER` does. Endpoint, protocol headers, service name and
sampling (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`…)
are read by the SDK itself.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

_configured = False
_recording = True  # until setup_tracing says otherwise: tests that never call it see spans
_exporting = True


def _span_exporter(name: str) -> SpanExporter | None:
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return ConsoleSpanExporter() if name == "console" else None


def _metric_exporter(name: str) -> MetricExporter | None:
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter()
    return ConsoleMetricExporter() if name == "console" else None


def setup_tracing(service: str) -> None:
    """Installs the tracer (and meter) provider of this process, once."""
    global _configured
    if _configured:
        return
    _configured = True
    os.environ.setdefault("OTEL_SERVICE_NAME", f"rehost-{service}")
    resource = Resource.create({"service.name": os.environ["OTEL_SERVICE_NAME"]})
    span_exporter = _span_exporter(os.environ.get("OTEL_TRACES_EXPORTER", "none"))
    # With nowhere to send spans, record none: ids are still made and propagated (logs and
    # records carry the trace id), but no span is built only to be dropped on every hop.
    idle = span_exporter is None and "OTEL_TRACES_SAMPLER" not in os.environ
    global _recording
    _recording = not idle
    provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF if idle else None)
    if span_exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    metric_exporter = _metric_exporter(os.environ.get("OTEL_METRICS_EXPORTER", "none"))
    global _exporting
    _exporting = _recording or metric_exporter is not None
    if metric_exporter is not None:
        reader = PeriodicExportingMetricReader(metric_exporter)
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
    if os.environ.get("OTEL_TRACES_EXPORTER", "none") != "none":
        from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

        PymongoInstrumentor().instrument()


def recording() -> bool:
    """Whether spans are recorded. When not, a span that propagates nothing (a store call,
    a publish) is not made at all: each cost more than the work it wrapped, for nothing."""
    return _recording


def exporting() -> bool:
    """Whether spans or metrics leave the process: when neither does, instrumentation that
    only feeds them (the HTTP server's) is not installed."""
    return _exporting


def request_context(headers: Mapping[str, Any]) -> Context:
    """The context of a request that no span records: its caller's trace (`traceparent`),
    or a new one, so that its logs and the messages it sends carry a trace id."""
    parent = extract_context(headers)
    return trace.set_span_in_context(tracer("rehost").start_span("request", parent), parent)


@contextlib.contextmanager
def span(name: str, kind: trace.SpanKind, **attributes: Any) -> Iterator[None]:
    """A span around a step that propagates nothing further, made only when recording."""
    if not _recording:
        yield
        return
    with tracer("rehost").start_as_current_span(name, kind=kind, attributes=attributes):
        yield


@contextlib.contextmanager
def continued(headers: Mapping[str, Any] | None, name: str, **attributes: Any) -> Iterator[None]:
    """Continues the trace a message carries: a consumer span when recording, or else only
    its context, so that logs, records and the messages sent meanwhile carry its trace id."""
    parent = extract_context(headers)
    if _recording:
        with tracer("rehost").start_as_current_span(
            name, context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes
        ):
            yield
        return
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)


@functools.cache
def tracer(name: str) -> trace.Tracer:
    """One tracer per name: `get_tracer` builds a new one on every call, on the hot path."""
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
