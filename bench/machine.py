"""The machine while a load runs: how fast its cores were, and how slowly its disk synced.

This project's machine is a guest of a shared host, and both vary from one second to the
next whatever Rehost does:

- *Its cores run at two speeds.* A fixed piece of Python work takes either about 1.4 or
  about 2.3 ms of CPU time (seen 2026-12-07), each core switching on its own every half
  second to few seconds, idle or loaded; `/proc/stat`'s steal time hardly moves meanwhile
  (the host does not deschedule the core, it runs it slower). An hour whose cores are slow
  most of the time serves two thirds of the requests of a fast one, and a tail measured
  while both cores are slow is the tail of a machine at 1.7 times the load.
- *Its disk stalls.* Every durable step of a write waits for a sync: the broker's
  write-ahead log before it confirms, each service's SQLite commit before it answers
  (under the results' load on 2026-12-07: p50 0.5 ms, p99 3.6, and once 172 ms).

So each figure that depends on them is printed with the machine it was measured on. The
probe is a process of its own (`python -m bench.machine DIR`), so the load client's event
loop does not delay its clock: its main thread writes one 4 KB page and syncs it every
10 ms in the temporary directory the bench's systems keep their data in, and one thread
pinned to each core times a fixed unit of work (about 0.3 ms) every 100 ms by that thread's
own CPU clock, which a busy core's other processes do not move. The probe costs the machine
about 0.03 of a core (the syncs 0.023, the units 0.009).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from bench.load import percentile

EVERY = 0.01  # seconds between syncs
PAGE = b"\0" * 4096
PAGES = 256  # the probe's file cycles through 1 MB, as a WAL reuses its space
UNIT_EVERY = 0.1  # seconds between units of work on each core
SLOW = 1.3  # a unit this many times the fast speed's was run by a slow core
# The fast speed's unit: the 5th percentile of a probe's units, the lowest over the bench's
# whole run (a probe may see only slow cores). Not the fastest unit itself: one unit timed
# short by its clock (seen: 190 µs among units of 240–300 on a machine whose cores kept one
# speed) had every unit after it counted slow.
FAST_PERCENTILE = 0.05
_fast_us = [float("inf")]


@dataclass(frozen=True)
class FsyncLatency:
    p50_ms: float
    p99_ms: float
    max_ms: float

    def describe(self) -> str:
        return f"fsync p50 {self.p50_ms:.1f} / p99 {self.p99_ms:.1f} / max {self.max_ms:.0f} ms"


@dataclass(frozen=True)
class Machine:
    fsync: FsyncLatency
    slow_share: float  # of the units of work, run by a core at its slow speed
    unit_us: float  # the units' median CPU time
    steal: float  # of the cores' time, taken by the host (`/proc/stat`)

    def describe(self) -> str:
        return (
            f"cores slow {self.slow_share:.0%} of the time (unit p50 {self.unit_us:.0f} µs), "
            f"steal {self.steal:.1%}; {self.fsync.describe()}"
        )


def _summary(latencies: list[float]) -> FsyncLatency:
    ordered = sorted(latencies)
    return FsyncLatency(
        p50_ms=percentile(ordered, 0.5), p99_ms=percentile(ordered, 0.99), max_ms=ordered[-1]
    )


def _steal_ticks() -> tuple[int, int]:
    """The host's steal and every core's ticks so far."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:9]]
    return ticks[7], sum(ticks)


def machine(fsyncs: list[float], units_us: list[float], steal: float) -> Machine:
    """The summary of one probe's samples; the fast speed's unit is kept for the probes after."""
    ordered = sorted(units_us)
    _fast_us[0] = min(_fast_us[0], percentile(ordered, FAST_PERCENTILE))
    slow = sum(u > SLOW * _fast_us[0] for u in ordered)
    return Machine(
        fsync=_summary(fsyncs),
        slow_share=slow / len(ordered),
        unit_us=percentile(ordered, 0.5),
        steal=steal,
    )


class MachineProbe:
    """`with MachineProbe() as probe: …`, then `probe.machine` (None when the probe failed)."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory or tempfile.gettempdir()
        self.machine: Machine | None = None

    def __enter__(self) -> MachineProbe:
        self._steal = _steal_ticks()
        self._probe = subprocess.Popen(
            [sys.executable, "-m", "bench.machine", self.directory],
            stdout=subprocess.PIPE,
            text=True,
        )
        return self

    def __exit__(self, *_: object) -> None:
        (steal, total), (steal_before, total_before) = _steal_ticks(), self._steal
        self._probe.terminate()
        try:
            out = self._probe.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            self._probe.kill()
            self._probe.communicate()
            return
        if self._probe.returncode == 0 and out.strip():
            samples = json.loads(out)
            if samples["fsyncs"] and samples["units_us"]:
                stolen = (steal - steal_before) / max(1, total - total_before)
                self.machine = machine(samples["fsyncs"], samples["units_us"], stolen)


def _unit() -> None:
    total = 0
    for i in range(6000):
        total += i * i % 7


def _time_units(core: int, stopped: threading.Event, units_us: list[float]) -> None:
    os.sched_setaffinity(0, {core})  # this thread only
    while not stopped.wait(UNIT_EVERY):
        started = time.thread_time()
        _unit()
        units_us.append((time.thread_time() - started) * 1e6)


def _sync_pages(directory: str, stopped: threading.Event, fsyncs: list[float]) -> None:
    path = os.path.join(directory, f"rehost-fsync-probe-{os.getpid()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while not stopped.is_set():
            os.pwrite(fd, PAGE, (len(fsyncs) % PAGES) * len(PAGE))
            started = time.perf_counter()
            os.fdatasync(fd)
            fsyncs.append((time.perf_counter() - started) * 1000)
            time.sleep(EVERY)
    finally:
        os.close(fd)
        os.unlink(path)


def probe(directory: str) -> dict[str, list[float]]:
    """Syncs a page every 10 ms and times a unit of work on each core until SIGTERM."""
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    fsyncs: list[float] = []
    units_us: list[float] = []
    timers = [
        threading.Thread(target=_time_units, args=(core, stopped, units_us), daemon=True)
        for core in sorted(os.sched_getaffinity(0))
    ]
    for timer in timers:
        timer.start()
    _sync_pages(directory, stopped, fsyncs)
    for timer in timers:
        timer.join()
    return {"fsyncs": fsyncs, "units_us": units_us}


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1])))
