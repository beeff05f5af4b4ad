"""Where the machine's CPU goes during a load: cores used by each process group.

Every Rehost process is started in a session of its own, so a gateway's workers are
counted with it; RabbitMQ (the Erlang VM, `beam.smp`) and the load generator (`wrk`)
are counted by name.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
BY_NAME = {"beam.smp": "RabbitMQ", "wrk": "wrk"}


def _ticks(groups: Mapping[int, str]) -> Counter[str]:
    used: Counter[str] = Counter()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        command, _, rest = stat.rpartition(")")
        fields = rest.split()
        name = groups.get(int(fields[2])) or BY_NAME.get(command.partition("(")[2])
        if name is not None:
            used[name] += int(fields[11]) + int(fields[12])  # utime + stime
    return used


class CpuShare:
    """`with CpuShare({pgid: name}) as share: …` then `share.cores`: name -> cores used
    (and `share.seconds`: name -> CPU seconds used)."""

    def __init__(self, groups: Mapping[int, str]) -> None:
        self.groups = groups
        self.seconds: dict[str, float] = {}
        self.cores: dict[str, float] = {}

    def __enter__(self) -> CpuShare:
        self._start = _ticks(self.groups)
        self._started = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        elapsed = time.monotonic() - self._started
        end = _ticks(self.groups)
        self.seconds = {
            name: (end[name] - self._start[name]) / TICK
            for name in end
            if end[name] > self._start[name]
        }
        self.cores = {name: used / elapsed for name, used in self.seconds.items()}

    def per_request_us(self, requests: float) -> dict[str, float]:
        """Each group's µs of CPU per request, `requests` answered meanwhile; the load
        generator (`wrk`) is left out: it is not what is measured."""
        return {name: used / requests * 1e6 for name, used in self.seconds.items() if name != "wrk"}

    def describe(self) -> str:
        ranked = sorted(self.cores.items(), key=lambda item: -item[1])
        return ", ".join(f"{name} {cores:.2f}" for name, cores in ranked)
