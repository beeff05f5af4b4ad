"""`rehost run`: every process of the system in the foreground, kept running.

Each child runs in a process group of its own, its output prefixed by its name. A child
that exits is started again after a back-off (doubling from half a second up to 30 s,
reset once it has run for a minute), and the others keep serving meanwhile; the
supervisor says so in its own log. Only Ctrl-C or SIGTERM stops everything: each child
gets SIGTERM, and SIGKILL if it has not stopped after the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

import structlog

log = structlog.get_logger("supervisor")

FIRST_DELAY = 0.5
MAX_DELAY = 30.0
STABLE_AFTER = 60.0
STOP_GRACE = 15.0
PR_SET_PDEATHSIG = 1
LINE_LIMIT = 4 * 1024 * 1024  # a log line longer than this ends the copy of its output
COLOURS = (36, 33, 32, 35, 34, 91, 92, 93)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    prefix: str = field(default="", repr=False)


class Supervisor:
    def __init__(self, children: list[Child], out: TextIO = sys.stdout) -> None:
        self.children = children
        self.out = out
        self._stopping = asyncio.Event()
        width = max(len(c.name) for c in children)
        for number, child in enumerate(children):
            label = child.name.ljust(width)
            colour = COLOURS[number % len(COLOURS)]
            child.prefix = f"\x1b[{colour}m{label} |\x1b[0m " if out.isatty() else f"{label} | "

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopping.set)
        keepers = [asyncio.create_task(self._keep(child)) for child in self.children]
        await self._stopping.wait()
        log.info("supervisor.stopping")
        await self._stop_all()
        await asyncio.gather(*keepers, return_exceptions=True)
        log.info("supervisor.stopped")

    async def _keep(self, child: Child) -> None:
        delay = FIRST_DELAY
        while not self._stopping.is_set():
            started = time.monotonic()
            code = await self._run_once(child)
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= STABLE_AFTER:
                delay = FIRST_DELAY
            child.restarts += 1
            log.warning(
                "process.exited",
                process=child.name,
                code=code,
                restart_in=delay,
                restarts=child.restarts,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            delay = min(delay * 2, MAX_DELAY)

    async def _run_once(self, child: Child) -> int:
        child.process = await asyncio.create_subprocess_exec(
            *child.argv,
            env=child.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops them in order
            preexec_fn=_die_with_parent,
            limit=LINE_LIMIT,
        )
        log.info("process.started", process=child.name, pid=child.process.pid)
        await self._copy_output(child, child.process)
        return await child.process.wait()

    async def _copy_output(self, child: Child, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            self.out.write(child.prefix + line.decode(errors="replace"))
            self.out.flush()

    async def _stop_all(self) -> None:
        running = [c.process for c in self.children if c.process and c.process.returncode is None]
        for process in running:
            _signal_group(process.pid, signal.SIGTERM)
        waits = [asyncio.create_task(p.wait()) for p in running]
        if not waits:
            return
        _, late = await asyncio.wait(waits, timeout=STOP_GRACE)
        for process in running:
            if process.returncode is None:
                _signal_group(process.pid, signal.SIGKILL)
        if late:
            await asyncio.wait(late, timeout=5)


def _die_with_parent() -> None:
    """In the child, before it runs: SIGTERM when the supervisor dies, even by SIGKILL,
    so that no process of the system outlives it (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
