"""One trace per call, across processes: gateway, broker hop, consumer, store (issue: tracing)."""

from __future__ import annotations

import httpx

from tests.conftest import auth
from tests.e2e.helpers import act, create_task, eventually, register, server_body
from tests.support.otlp import Receiver, Span

SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5  # OTLP span kinds


def trace_id_of(response: httpx.Response) -> str:
    # The gateway answers inside its server span; its id comes back in the traceparent we sent.
    return response.request.headers["traceparent"].split("-")[1]


def traced_request(trace_id: str) -> dict[str, str]:
    return {"traceparent": f"00-{trace_id}-{'1' * 16}-01"}


def ancestors(span: Span, spans: list[Span]) -> list[Span]:
    by_id = {s.span_id: s for s in spans}
    chain = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        chain.append(span)
    return chain


async def connected_trace(
    otlp: Receiver, trace_id: str, routing_key: str, consumer: str
) -> list[Span]:
    """The trace once every process has exported its part of it (exports are batched)."""

    async def complete() -> list[Span] | None:
        spans = otlp.trace(trace_id)
        try:
            assert_one_connected_trace(spans, routing_key, consumer)
        except (AssertionError, StopIteration, ValueError):
            return None
        return spans

    try:
        return list(await eventually(complete, timeout=30))
    except TimeoutError:
        spans = otlp.trace(trace_id)
        assert_one_connected_trace(spans, routing_key, consumer)  # fails, saying what is missing
        raise


def assert_one_connected_trace(spans: list[Span], routing_key: str, consumer: str) -> None:
    services = {s.service for s in spans}
    assert {"rehost-gateway", consumer} <= services, sorted({(s.service, s.name) for s in spans})
    [http] = [s for s in spans if s.service == "rehost-gateway" and s.kind == SERVER]
    publish = next(s for s in spans if s.kind == PRODUCER and s.name == f"{routing_key} publish")
    process = next(s for s in spans if s.kind == CONSUMER and s.name == f"{routing_key} process")
    assert http in ancestors(publish, spans)
    assert publish in ancestors(process, spans) or http in ancestors(process, spans)
    stored = [s for s in spans if s.service == consumer and s.kind == CLIENT]
    assert stored and all(process in ancestors(s, spans) for s in stored)
    reply = [s for s in spans if s.service == consumer and s.name == "reply publish"]
    assert reply and process in ancestors(reply[0], spans)


async def test_a_register_call_is_one_connected_trace(
    client: httpx.AsyncClient, otlp: Receiver
) -> None:
    trace_id = "a" * 16 + "0" * 15 + "1"
    response = await client.post(
        "/v3/sources", json=server_body(), headers={**auth(), **traced_request(trace_id)}
    )
    assert response.status_code == 200
    spans = await connected_trace(otlp, trace_id, "sms.source.register", "rehost-registry")
    assert any(s.kind == CLIENT and s.name == "sqlite save sources" for s in spans)


async def test_a_command_result_call_is_one_connected_trace(
    client: httpx.AsyncClient, otlp: Receiver
) -> None:
    server_id = await register(client)
    task_id = await create_task(client, server_id)
    assert (await act(client, task_id, "start")).status_code == 200
    trace_id = "b" * 16 + "0" * 15 + "2"
    response = await client.post(
        f"/v3/sources/{server_id}/command_result",
        json={"command_name": "START", "result": "success", "result_detail": {}},
        headers={**auth(), **traced_request(trace_id)},
    )
    assert response.status_code == 200
    spans = await connected_trace(otlp, trace_id, "sms.source.report_result", "rehost-registry")
    # The record the registry tells command-result is in the same trace…
    assert spans
    await eventually(lambda: _consumed_by(otlp, trace_id, "rehost-command-result"), timeout=30)
    # …and so is the event its outbox relay published.
    try:
        await eventually(lambda: _has(otlp, trace_id, "source.state_changed publish"), timeout=30)
    except TimeoutError:
        names = sorted({(s.service, s.name) for s in otlp.trace(trace_id)})
        raise AssertionError(f"no relay publish in the trace; it has {names}") from None


async def _consumed_by(otlp: Receiver, trace_id: str, service: str) -> bool:
    spans = otlp.trace(trace_id)
    return any(s.service == service and s.kind == CONSUMER for s in spans)


async def _has(otlp: Receiver, trace_id: str, name: str) -> bool:
    return any(s.name == name for s in otlp.trace(trace_id))
