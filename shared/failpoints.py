"""Named fault points for fault tests, armed by `REHOST_FAILPOINTS` (comma-separated):

- `failpoint("lock_taken")` makes the process die at once (as kill -9 would);
- `await late("settle")` makes it wait `LATE_SECONDS` there: a step made late, so that a
  test can prove what happens when another step overtakes it.

Unset, as in every deployment, each is a set lookup and nothing else."""

from __future__ import annotations

import asyncio
import os

_ARMED = frozenset(filter(None, os.environ.get("REHOST_FAILPOINTS", "").split(",")))
LATE_SECONDS = 1.0


def failpoint(name: str) -> None:
    if name in _ARMED:
        os._exit(137)


async def late(name: str) -> None:
    if name in _ARMED:
        await asyncio.sleep(LATE_SECONDS)
