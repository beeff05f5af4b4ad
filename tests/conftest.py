"""Session fixtures: the real broker on a vhost of its own, and the running system."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from shared.auth import mint
from tests.support import broker, mongo
from tests.support.otlp import Receiver
from tests.support.processes import System

SECRET = "test-secret-for-rehost-tests-0123456789"
# Access keys for SDK-signed requests: (ak, sk, domain, projects, enabled).
ACCESS_KEYS = [
    ("AKDOMAINA00000000001", "sk-domain-a-secret", "domain-a", ["project-a"], True),
    ("AKDISABLED0000000002", "sk-disabled-secret", "domain-a", ["project-a"], False),
    ("AKDOMAINB00000000003", "sk-domain-b-secret", "domain-b", ["project-b"], True),
]


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    if "REHOST_TEST_AMQP_URL" in os.environ:
        yield os.environ["REHOST_TEST_AMQP_URL"]
        return
    try:
        broker.ensure_running()
    except RuntimeError as exc:
        pytest.exit(str(exc), returncode=3)
    vhost = broker.create_vhost()
    yield broker.amqp_url(vhost)
    if vhost:
        broker.delete_vhost(vhost)


# `REHOST_TEST_STORE=mongodb`: every service of the test system on the MongoDB adapter
# (`make test` runs the store-heavy suites a second time so).
ON_MONGODB = os.environ.get("REHOST_TEST_STORE") == "mongodb"


@pytest.fixture(scope="session")
def mongodb_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A MongoDB-wire server: REHOST_TEST_MONGODB_URL's, or SecantusDB for this run."""
    if not mongo.available():
        pytest.skip("no MongoDB-wire server: set REHOST_TEST_MONGODB_URL or run `make test`")
    with mongo.mongodb(tmp_path_factory.mktemp("mongodb")) as url:
        yield url


@pytest.fixture(scope="session")
def otlp() -> Iterator[Receiver]:
    """Where every process of the test system exports its spans."""
    receiver = Receiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def store_url(request: pytest.FixtureRequest) -> str:
    """REHOST_STORE_URL of the test system: empty (a SQLite file per service) or, on
    MongoDB, a database of this run's own."""
    if not ON_MONGODB:
        return ""
    base: str = request.getfixturevalue("mongodb_url")
    return f"{base}/rehost_e2e_{os.getpid()}"


@pytest.fixture(scope="session")
def base_env(
    amqp_url: str, tmp_path_factory: pytest.TempPathFactory, otlp: Receiver, store_url: str
) -> dict[str, str]:
    data = tmp_path_factory.mktemp("var")
    keys = data / "access-keys.jsonl"
    keys.write_text(
        "".join(
            json.dumps(
                {
                    "ak": ak,
                    "sk": sk,
                    "domain_id": d,
                    "project_ids": p,
                    "actions": ["*"],
                    "enabled": on,
                }
            )
            + "\n"
            for ak, sk, d, p, on in ACCESS_KEYS
        )
    )
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("REHOST_", "OTEL_"))},
        "REHOST_AMQP_URL": amqp_url,
        "REHOST_DATA_DIR": str(data),
        "REHOST_STORE_URL": store_url,
        "REHOST_AUTH_SECRET": SECRET,
        "REHOST_ACCESS_KEYS": str(keys),
        "REHOST_REPLY_TIMEOUT": "3",
        "REHOST_DELIVERY_LIMIT": "3",
        "REHOST_OUTBOX_INTERVAL": "0.5",
        "REHOST_LOG_FORMAT": "json",
        "REHOST_AGENT_DOMAIN": "domain-a",
        # The fleets these tests start bind themselves; the operator's path has its tests.
        "REHOST_AGENT_TRUST_ON_FIRST_USE": "true",
        # Every heartbeat is a write: SecantusDB, a Python server on the same two cores,
        # keeps up with a fleet's at half the rate.
        "REHOST_AGENT_HEARTBEAT": "2" if ON_MONGODB else "1",
        "REHOST_AGENT_OFFLINE_AFTER": "8" if ON_MONGODB else "4",
        "REHOST_RUN_GRACE": "3",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


@pytest.fixture(scope="session")
def system(base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    system = System(base_env, tmp_path_factory.mktemp("logs"))
    system.add("registry", "REHOST_REGISTRY_HEALTH_PORT")
    system.add("command-result", "REHOST_COMMAND_RESULT_HEALTH_PORT")
    system.add("task-lock", "REHOST_TASK_LOCK_HEALTH_PORT")
    system.add("script-executor", "REHOST_SCRIPT_EXECUTOR_HEALTH_PORT")
    system.add("gateway", None)
    try:
        for process in system.processes.values():
            process.start()
        yield system
    finally:
        system.stop_all()


def token(domain: str = "domain-a", actions: list[str] | None = None, ttl: int = 3600) -> str:
    return mint(SECRET, domain, actions if actions is not None else ["sms:*"], ttl=ttl)


def auth(domain: str = "domain-a", actions: list[str] | None = None) -> dict[str, str]:
    return {"X-Auth-Token": token(domain, actions)}


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=15) as http:
        yield http
