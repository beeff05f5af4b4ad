"""Heartbeats (services/script_executor/agents.py): one that says nothing new while the
stored `last_seen` is recent is not written, and an alive agent never reads as offline."""

from __future__ import annotations

import random

import pytest

from services.script_executor import agents
from shared.contracts.scripts import Heartbeat
from shared.store import Document

CLAIM = agents.Claim("web-01", "agent-web-01", "d")


def beat(hostname: str = "h", running: int = 0, at: str = "t") -> Heartbeat:
    return Heartbeat(agent_sn="web-01", vm_uuid="vm", hostname=hostname, running=running, at=at)


def first(now: float) -> Document:
    decided = agents.heartbeat(None, CLAIM, beat(), now, first_use="d", vm_taken=False)
    assert decided.doc is not None  # the first heartbeat binds the agent: always written
    return decided.doc


def after(doc: Document, heartbeat: Heartbeat, now: float, fresh: float) -> Document | None:
    decided = agents.heartbeat(
        doc, CLAIM, heartbeat, now, first_use=None, vm_taken=False, fresh=fresh
    )
    assert decided.reply.status == 200
    return decided.doc


@pytest.mark.parametrize(
    ("offline_after", "every", "fresh"),
    [(15, 5, 5), (4, 1, 4 / 3), (8, 2, 8 / 3), (15, 10, 0), (6, 5, 0)],
)
def test_how_recent_a_last_seen_needs_no_write(
    offline_after: float, every: float, fresh: float
) -> None:
    assert agents.fresh_for(offline_after, every) == pytest.approx(fresh)


def test_a_heartbeat_that_says_nothing_new_is_written_only_once_last_seen_ages() -> None:
    doc = first(100.0)
    assert after(doc, beat(at="t2"), 103.0, fresh=5) is None  # recent, the same: no write
    written = after(doc, beat(at="t3"), 105.5, fresh=5)
    assert written is not None and written.data["last_seen"] == 105.5
    assert written.data["at"] == "t3"
    assert after(doc, beat(), 101.0, fresh=0) is not None  # no freshness: every beat written


@pytest.mark.parametrize("changed", [beat(hostname="h2"), beat(running=2)])
def test_a_heartbeat_that_says_something_new_is_written_at_once(changed: Heartbeat) -> None:
    written = after(first(100.0), changed, 101.0, fresh=5)
    assert written is not None and written.data["last_seen"] == 101.0


@pytest.mark.parametrize(
    ("offline_after", "every", "skips"),
    [(15, 5, True), (4, 1, True), (8, 2, True), (15, 7, False)],
)
def test_an_agent_beating_on_time_never_reads_as_offline(
    offline_after: float, every: float, skips: bool
) -> None:
    """Heartbeats up to almost twice their period apart (a late one), for a few hundred
    beats: what reads as alive without skipped writes reads as alive with them."""
    fresh = agents.fresh_for(offline_after, every)
    liveness = agents.Liveness(store=None, offline_after=offline_after)  # type: ignore[arg-type]
    rng = random.Random(3)
    now = 1000.0
    doc = first(now)
    writes = 0
    for _ in range(300):
        now += every * rng.uniform(0.5, 1.95)
        assert liveness.alive(doc, "d", now - 1e-6), (now, doc.data["last_seen"])
        doc = after(doc, beat(at=str(now)), now, fresh) or doc
        writes += doc.data["last_seen"] == now
    assert (writes < 250) if skips else (writes == 300)
