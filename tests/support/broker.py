"""The real RabbitMQ for the tests: started when it is down, one fresh vhost per test run."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid

import aio_pika

HOST, PORT = "127.0.0.1", 5672


def reachable(timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_running(wait: float = 90.0) -> None:
    """Starts RabbitMQ with `rabbitmq-server -detached` when it is down; raises if it stays down."""
    if reachable():
        return
    if shutil.which("rabbitmq-server"):
        subprocess.run(["rabbitmq-server", "-detached"], check=False, capture_output=True)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if reachable():
            time.sleep(2)  # the port opens slightly before the broker accepts logins
            return
        time.sleep(1)
    raise RuntimeError(
        f"RabbitMQ is not reachable on {HOST}:{PORT} and `rabbitmq-server -detached` did not "
        "bring it up. Start it (or point REHOST_AMQP_URL at one) and run the tests again."
    )


def rabbitmqctl(*args: str, check: bool = True) -> str:
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def create_vhost() -> str | None:
    """A vhost of its own keeps a test run's queues apart from everything else on the broker."""
    if not shutil.which("rabbitmqctl"):
        return None
    name = f"rehost-test-{uuid.uuid4().hex[:8]}"
    try:
        rabbitmqctl("add_vhost", name)
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    except (RuntimeError, subprocess.TimeoutExpired, PermissionError):
        return None
    return name


def delete_vhost(name: str) -> None:
    rabbitmqctl("delete_vhost", name, check=False)


def amqp_url(vhost: str | None) -> str:
    return f"amqp://guest:guest@{HOST}:{PORT}/{vhost or ''}"


async def declared(url: str, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of an existing queue, read afresh: a fresh connection,
    since a robust channel answers a repeated passive declare from its cache."""
    connection = await aio_pika.connect_robust(url)
    async with connection:
        channel = await connection.channel()
        result = (await channel.declare_queue(queue, passive=True)).declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)


def vhost_of(url: str) -> str:
    return url.rsplit("/", 1)[1] or "/"


def agent_account(amqp_url: str, agent_sn: str) -> tuple[str, str]:
    """A RabbitMQ account for one agent with exactly the README's permissions: its own
    queue, and publishing to `rehost.events` only under `agent.<SN>.`. (user, URL)"""
    vhost = vhost_of(amqp_url)
    user, password = f"agent-{agent_sn}", uuid.uuid4().hex
    escaped = agent_sn.replace("-", "\\-").replace(".", "\\.")
    own_queue, events_key = f"^rehost\\.agent\\.{escaped}$", f"^agent\\.{escaped}\\."
    rabbitmqctl("add_user", user, password)
    rabbitmqctl("set_permissions", "-p", vhost, user, own_queue, "^rehost\\.events$", own_queue)
    rabbitmqctl("set_topic_permissions", "-p", vhost, user, "rehost.events", events_key, "^$")
    return user, f"amqp://{user}:{password}@{HOST}:{PORT}/{vhost}"
