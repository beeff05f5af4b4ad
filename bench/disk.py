"""The disk's fsync latency while a load runs, measured beside each tail the bench reports.

Every durable step of a write waits for one: the broker's write-ahead log before it
confirms a command or a record, each service's SQLite commit before it answers. On a shared
machine the disk has slow hours and stalls of its own (on 2026-12-07 under the results'
load: p50 0.5 ms, p99 3.6, and once 172 ms), which lengthen a write's tail whatever Rehost
does; the figure says which kind of hour a tail was measured in.

The probe is a process of its own (`python -m bench.disk DIR`), so the load client's event
loop does not delay its clock. It writes one 4 KB page and syncs it every 10 ms, a few
hundred KB a second, in the temporary directory the bench's systems keep their data in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from bench.load import percentile

EVERY = 0.01  # seconds between syncs
PAGE = b"\0" * 4096
PAGES = 256  # the probe's file cycles through 1 MB, as a WAL reuses its space


@dataclass(frozen=True)
class FsyncLatency:
    p50_ms: float
    p99_ms: float
    max_ms: float

    def describe(self) -> str:
        return f"fsync p50 {self.p50_ms:.1f} / p99 {self.p99_ms:.1f} / max {self.max_ms:.0f} ms"


def _summary(latencies: list[float]) -> FsyncLatency:
    ordered = sorted(latencies)
    return FsyncLatency(
        p50_ms=percentile(ordered, 0.5), p99_ms=percentile(ordered, 0.99), max_ms=ordered[-1]
    )


class DiskProbe:
    """`with DiskProbe() as disk: …`, then `disk.latency` (None when the probe failed)."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory or tempfile.gettempdir()
        self.latency: FsyncLatency | None = None

    def __enter__(self) -> DiskProbe:
        self._probe = subprocess.Popen(
            [sys.executable, "-m", "bench.disk", self.directory],
            stdout=subprocess.PIPE,
            text=True,
        )
        return self

    def __exit__(self, *_: object) -> None:
        self._probe.terminate()
        try:
            out = self._probe.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            self._probe.kill()
            self._probe.communicate()
            return
        if self._probe.returncode == 0 and out.strip():
            self.latency = FsyncLatency(**json.loads(out))


def probe(directory: str) -> list[float]:
    """Syncs a page every 10 ms until SIGTERM; each sync's latency in ms."""
    stopped = False

    def stop(*_: object) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, stop)
    path = os.path.join(directory, f"rehost-fsync-probe-{os.getpid()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    latencies: list[float] = []
    try:
        while not stopped:
            os.pwrite(fd, PAGE, (len(latencies) % PAGES) * len(PAGE))
            started = time.perf_counter()
            os.fdatasync(fd)
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(EVERY)
    finally:
        os.close(fd)
        os.unlink(path)
    return latencies


if __name__ == "__main__":
    measured = probe(sys.argv[1])
    if measured:
        print(json.dumps(_summary(measured).__dict__))
