"""Named crash points for fault tests: `REHOST_FAILPOINTS=lock_taken` makes the process
die at once (as kill -9 would) when it reaches `failpoint("lock_taken")`. Unset, as
in every deployment, a failpoint is a dictionary lookup and nothing else."""

from __future__ import annotations

import os

_ARMED = frozenset(filter(None, os.environ.get("REHOST_FAILPOINTS", "").split(",")))


def failpoint(name: str) -> None:
    if name in _ARMED:
        os._exit(137)
