"""A MongoDB-wire server for the tests: the one `REHOST_TEST_MONGODB_URL` names, or else
SecantusDB started on a free port.

SecantusDB (GPL, a beta) is a test-only tool: it lives in a virtual environment of its
own (`.venv-secantus`, made by `make test`), is run as a separate process and never
imported, so nothing of it reaches Rehost's own environment or image.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / ".venv-secantus" / "bin" / "secantusd-py"


def available() -> bool:
    return bool(os.environ.get("REHOST_TEST_MONGODB_URL")) or SERVER.exists()


@contextmanager
def mongodb(workdir: Path, wait: float = 60.0) -> Iterator[str]:
    """A `mongodb://host:port` URL (no database): the given server's, or a fresh SecantusDB
    stopped when the block ends."""
    if given := os.environ.get("REHOST_TEST_MONGODB_URL"):
        yield given.rstrip("/")
        return
    if not SERVER.exists():
        raise RuntimeError(f"no MongoDB-wire server: {SERVER} is missing (`make test` makes it)")
    port = free_port()
    storage = workdir / "secantus"
    storage.mkdir(parents=True, exist_ok=True)
    log = (workdir / "secantus.log").open("ab")
    server = subprocess.Popen(
        [str(SERVER), "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(storage)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for(port, server, wait)
        yield f"mongodb://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        log.close()
        shutil.rmtree(storage, ignore_errors=True)


def _wait_for(port: int, server: subprocess.Popen[bytes], wait: float) -> None:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"SecantusDB exited at start (code {server.returncode})")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"SecantusDB did not listen on {port} within {wait}s")
