"""Rehost's real processes, started the way `make run` starts them, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Process:
    name: str
    env: dict[str, str]
    log_path: Path
    ready_url: str
    popen: subprocess.Popen[bytes] | None = None

    args: tuple[str, ...] = ()

    def start(self, wait: float = 30.0) -> None:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "services.cli", self.name, *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready(wait)

    def wait_ready(self, wait: float = 30.0) -> None:
        if not self.ready_url:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            try:
                if httpx.get(self.ready_url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {wait}s:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, wait: float = 20.0) -> int | None:
        if self.popen is None or self.popen.poll() is not None:
            return self.popen.returncode if self.popen else None
        os.killpg(self.popen.pid, sig)
        try:
            return self.popen.wait(wait)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            return self.popen.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class System:
    """The gateway and the services, each its own process, on one test vhost."""

    base_env: dict[str, str]
    workdir: Path
    processes: dict[str, Process] = field(default_factory=dict)

    def add(
        self,
        command: str,
        health_port_var: str | None,
        extra: dict[str, str] | None = None,
        name: str | None = None,
    ) -> Process:
        port = free_port()
        env = {**self.base_env, **(extra or {})}
        if health_port_var is None:
            env["REHOST_GATEWAY_PORT"] = str(port)
            url = f"http://127.0.0.1:{port}/readyz"
        else:
            env[health_port_var] = str(port)
            url = f"http://127.0.0.1:{port}/readyz"
        name = name or command
        process = Process(command, env, self.workdir / f"{name}.log", url)
        self.processes[name] = process
        return process

    def __getitem__(self, name: str) -> Process:
        return self.processes[name]

    @property
    def gateway_url(self) -> str:
        return self.processes["gateway"].ready_url.removesuffix("/readyz")

    def add_agent(self, agent_sn: str, *args: str, extra: dict[str, str] | None = None) -> Process:
        """An agent process; it has no health port, so `start()` does not wait for it."""
        env = {**self.base_env, **(extra or {})}
        process = Process("agent", env, self.workdir / f"agent-{agent_sn}.log", "")
        process.args = ("--agent-sn", agent_sn, *args)
        self.processes[f"agent-{agent_sn}"] = process
        return process

    def rss_kb(self, name: str, field: str = "VmHWM") -> int:
        """The process's resident memory in kB: its peak so far (VmHWM) or now (VmRSS)."""
        process = self.processes[name].popen
        assert process is not None
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        return 0

    def discard(self, name: str) -> None:
        """Stops a process one test added and forgets it: a later test that waits for every
        process to be ready must not find it exited."""
        self.processes.pop(name).stop()

    def stop_all(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()
