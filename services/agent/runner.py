"""Running one script or command on this host.

The content is written to a private temporary file and executed directly by its
interpreter; parameters reach it as ordered arguments and as environment
variables, never spliced into a command line. It runs in its own process group;
past its timeout the whole group is killed. Output is captured by `Capture`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from shared.contracts.scripts import (
    MAX_OUTPUT,
    AgentRun,
    RunFinished,
    RunStatus,
    param_name_problem,
)

from .capture import Capture

INTERPRETERS = {"SHELL": ["/bin/sh"], "PYTHON": [sys.executable or "python3"]}
KILL_GRACE = 2.0
DRAIN_GRACE = 1.0


class UserRefused(Exception):
    """The agent will not run this (e.g. it cannot switch to the requested user)."""


def _user(requested: str | None) -> pwd.struct_passwd | None:
    """The account to run as; None means the agent's own (found by uid: LOGNAME and
    USER are whatever the agent's environment says)."""
    current = pwd.getpwuid(os.geteuid()).pw_name
    if not requested or requested == current:
        return None
    if os.geteuid() != 0:
        raise UserRefused(f"the agent runs as {current} and cannot run scripts as {requested}")
    try:
        return pwd.getpwnam(requested)
    except KeyError as exc:
        raise UserRefused(f"no user {requested} on this host") from exc


def _environment(job: AgentRun, account: pwd.struct_passwd | None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "HOME": account.pw_dir if account else os.environ.get("HOME", "/"),
        "REHOST_RUN_ID": job.run_id,
    }
    # Checked again here: a run may come from anyone who can write to this queue.
    for param in job.params:
        if param_name_problem(param.name) is None:
            env[param.name] = param.value
    return env


def _argv(job: AgentRun, script: Path) -> list[str]:
    if job.kind == "command":
        return ["/bin/sh", str(script)]
    args = [p.value for p in sorted(job.params, key=lambda p: p.order)]
    return [*INTERPRETERS[job.script_type], str(script), *args]


async def _pump(stream: asyncio.StreamReader | None, name: str, capture: Capture) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        capture.feed(name, chunk)


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _wait(process: asyncio.subprocess.Process, timeout: float) -> bool:
    """Waits for the process; past `timeout` kills its group (TERM, then KILL). True: it ended."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await process.wait()
            return True
    _kill_group(process.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(KILL_GRACE):
            await process.wait()
    _kill_group(process.pid, signal.SIGKILL)
    await process.wait()
    return False


class Runner:
    """Runs jobs; `cancel(run_id)` kills a running one."""

    def __init__(self, agent_sn: str) -> None:
        self.agent_sn = agent_sn
        self._running: dict[str, asyncio.subprocess.Process] = {}
        self._canceled: set[str] = set()

    @property
    def running(self) -> int:
        return len(self._running)

    def cancel(self, run_id: str) -> bool:
        """Kills the run's process group; False when it is not running here."""
        process = self._running.get(run_id)
        if process is None:
            return False
        self._canceled.add(run_id)
        _kill_group(process.pid, signal.SIGKILL)
        return True

    def canceled(self, job: AgentRun) -> RunFinished:
        """A run canceled before it started."""
        capture = Capture(MAX_OUTPUT)
        return self._finished(job, "CANCELED", None, time.monotonic(), capture, "canceled")

    def failed(self, job: AgentRun, error: str) -> RunFinished:
        return self._finished(job, "FAILED", None, time.monotonic(), Capture(MAX_OUTPUT), error)

    async def run(self, job: AgentRun) -> RunFinished:
        started = time.monotonic()
        try:
            account = _user(job.execute_user)
        except UserRefused as exc:
            return self._finished(job, "FAILED", None, started, Capture(MAX_OUTPUT), str(exc))
        workdir = Path(tempfile.mkdtemp(prefix="rehost-run-"))  # mode 0700
        try:
            script = workdir / ("script.py" if job.script_type == "PYTHON" else "script.sh")
            script.write_text(job.content)
            script.chmod(0o700)
            if account is not None:
                for path in (workdir, script):
                    os.chown(path, account.pw_uid, account.pw_gid)
            return await self._execute(job, script, account, started)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    async def _execute(
        self, job: AgentRun, script: Path, account: pwd.struct_passwd | None, started: float
    ) -> RunFinished:
        capture = Capture(MAX_OUTPUT)
        process = await asyncio.create_subprocess_exec(
            *_argv(job, script),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_environment(job, account),
            cwd=str(script.parent),
            start_new_session=True,  # its own process group, killed as one
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            # The target user's own groups, never root's supplementary ones.
            extra_groups=os.getgrouplist(account.pw_name, account.pw_gid) if account else None,
        )
        self._running[job.run_id] = process
        pumps = asyncio.gather(
            _pump(process.stdout, "stdout", capture), _pump(process.stderr, "stderr", capture)
        )
        try:
            timed_out = not await _wait(process, job.timeout)
            # Children left holding the pipes get a moment to finish, then go with the group.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_GRACE):
                    await asyncio.shield(pumps)
            _kill_group(process.pid, signal.SIGKILL)
            pumps.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumps
        finally:
            self._running.pop(job.run_id, None)
        if job.run_id in self._canceled:
            self._canceled.discard(job.run_id)
            return self._finished(job, "CANCELED", process.returncode, started, capture, "canceled")
        if timed_out:
            message = f"killed after its timeout of {job.timeout:g}s"
            return self._finished(job, "TIMEOUT", None, started, capture, message)
        status: RunStatus = "SUCCESS" if process.returncode == 0 else "FAILED"
        return self._finished(job, status, process.returncode, started, capture, None)

    def _finished(
        self,
        job: AgentRun,
        status: RunStatus,
        exit_code: int | None,
        started: float,
        capture: Capture,
        error: str | None,
    ) -> RunFinished:
        stdout, stderr = capture.texts()
        return RunFinished(
            run_id=job.run_id,
            agent_sn=self.agent_sn,
            status=status,
            exit_code=exit_code,
            duration_ms=int((time.monotonic() - started) * 1000),
            stdout=stdout,
            stderr=stderr,
            dropped_bytes=capture.dropped,
            error=error,
        )
