"""A three-node RabbitMQ cluster on this machine, beside its own broker, for the tests.

Each node is a `rabbitmq-server -detached` of its own (node name `rcN-<run>@localhost`, its own
AMQP and distribution ports, data and log directories owned by the `rabbitmq` user, and a
config file whose listener is its port: the machine's own config pins 5672). The second
and third join the first. A node is lost the hard way, `kill -9` of its Erlang VM, and
brought back with the same command, after which it rejoins by itself. The machine's own
broker is never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import free_port

RABBITMQ_USER = "rabbitmq"


def _ctl(node: str, *args: str, timeout: float = 120, check: bool = True) -> str:
    result = subprocess.run(
        ["rabbitmqctl", "-q", "-n", node, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl -n {node} {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


@dataclass
class Node:
    name: str
    port: int
    dist_port: int
    base: Path

    @property
    def node(self) -> str:
        return f"{self.name}@localhost"

    @property
    def pid_file(self) -> Path:
        return self.base / "pid"

    def prepare(self) -> None:
        for sub in ("mnesia", "log"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n")
        shutil.chown(self.base.parent, RABBITMQ_USER, RABBITMQ_USER)
        for path in (self.base, *self.base.rglob("*")):
            shutil.chown(path, RABBITMQ_USER, RABBITMQ_USER)

    def start(self) -> None:
        env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
        }
        subprocess.run(["rabbitmq-server", "-detached"], env=env, check=True, timeout=60)

    def await_startup(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Fails at once until the node has registered with epmd, so: again and again.
            try:
                _ctl(self.node, "await_startup", "--timeout", "60", timeout=90)
                return
            except RuntimeError:
                time.sleep(0.5)
        raise RuntimeError(f"{self.node} did not start within {timeout}s")

    def kill(self) -> None:
        """`kill -9` of the node's Erlang VM: no goodbye to its peers or its clients."""
        os.kill(int(self.pid_file.read_text().strip()), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _ctl(self.node, "status", check=False, timeout=30) and time.monotonic() < deadline:
            time.sleep(0.2)

    def stop(self) -> None:
        _ctl(self.node, "stop", check=False, timeout=60)


@dataclass
class Cluster:
    nodes: list[Node]
    vhost: str = field(default_factory=lambda: f"rehost-cluster-{uuid.uuid4().hex[:8]}")

    @classmethod
    def start(cls, size: int = 3) -> Cluster:
        base = Path(tempfile.mkdtemp(prefix="rehost-cluster-"))
        run = uuid.uuid4().hex[:6]  # node names of this run's own: a stale node never collides
        nodes = [
            Node(f"rc{i}-{run}", free_port(), free_port(), base / f"rc{i}")
            for i in range(1, size + 1)
        ]
        cluster = cls(nodes)
        try:
            for node in nodes:
                node.prepare()
                node.start()
            for node in nodes:
                node.await_startup()
            first = nodes[0].node
            for node in nodes[1:]:
                _ctl(node.node, "stop_app")
                _ctl(node.node, "reset")
                _ctl(node.node, "join_cluster", first)
                _ctl(node.node, "start_app")
            _ctl(first, "add_vhost", cluster.vhost)
            _ctl(first, "set_permissions", "-p", cluster.vhost, "guest", ".*", ".*", ".*")
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def url(self, node: Node) -> str:
        return f"amqp://guest:guest@127.0.0.1:{node.port}/{self.vhost}"

    def urls(self, first: int = 0) -> str:
        """Every node's URL, comma-separated, starting at node `first` (so that the
        processes given different starts spread their connections over the nodes)."""
        ordered = self.nodes[first % len(self.nodes) :] + self.nodes[: first % len(self.nodes)]
        return ",".join(self.url(node) for node in ordered)

    def running(self) -> list[str]:
        status = _ctl(self.nodes[0].node, "eval", "rabbit_nodes:all_running().", check=False)
        return [n.node for n in self.nodes if n.node in status]

    def await_members(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(self.running()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.running()} running after {timeout}s")
            time.sleep(0.5)

    def queue_members(self, queue: str) -> list[str]:
        """The nodes a quorum queue has replicas on."""
        listed = _ctl(self.nodes[0].node, "list_queues", "-p", self.vhost, "name", "members")
        for line in listed.splitlines():
            name, _, members = line.partition("\t")
            if name == queue:
                return [n.node for n in self.nodes if n.node in members]
        return []

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self.nodes:
            shutil.rmtree(self.nodes[0].base.parent, ignore_errors=True)
