"""Rehost's metrics, as OpenTelemetry instruments. Without a meter provider (no
`OTEL_METRICS_EXPORTER`) they are no-ops and cost nothing."""

from __future__ import annotations

from opentelemetry import metrics

_meter = metrics.get_meter("rehost")

messages = _meter.create_counter(
    "rehost.messages", description="Messages by queue, routing key and outcome"
)  # outcome: consumed, acked, requeued, dead_lettered
handler_duration = _meter.create_histogram(
    "rehost.handler.duration", unit="ms", description="Time to handle one message"
)
outbox_published = _meter.create_counter(
    "rehost.outbox.published", description="Events and commands the outbox relay published"
)
outbox_backlog = _meter.create_gauge(
    "rehost.outbox.backlog", description="Outbox entries waiting at the last sweep"
)
reply_timeouts = _meter.create_counter(
    "rehost.reply.timeouts", description="Gateway requests that got no reply in time"
)
lock_contention = _meter.create_counter(
    "rehost.lock.contention", description="Task starts refused because the target was locked"
)
events_published = _meter.create_counter(
    "rehost.events.published",
    description="Events published, by type (and status for script executions and hosts)",
)
agent_events_refused = _meter.create_counter(
    "rehost.agent.refused",
    description="Agent events dead-lettered because the agent's identity does not allow them",
)  # reason: sn_mismatch, unknown_agent, wrong_account, vm_mismatch, not_dispatched, routing_key
