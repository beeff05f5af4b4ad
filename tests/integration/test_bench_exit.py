"""The bench on a failed part: it says why and exits, whatever connection the part left open."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A part that fails with a robust connection left open, through a proxy that then goes
# silent: the connection's next attempt hangs in its handshake, and aio-pika's reconnect
# loop swallows the cancellation that asyncio.run sends it there (mosquito/aio-pika#414).
FAILING_RUN = textwrap.dedent(
    """
    import asyncio
    from urllib.parse import urlsplit

    import aio_pika
    import bench.run as run
    from tests.support.proxy import FreezingProxy

    async def failing_ceilings(amqp_url, seconds, raw):
        broker = urlsplit(amqp_url)
        proxy = FreezingProxy(broker.hostname, broker.port)
        port = await proxy.start()
        url = amqp_url.replace(broker.netloc.split("@")[-1], f"127.0.0.1:{port}")
        run.left_open = await aio_pika.connect_robust(url, reconnect_interval=0.1)
        proxy.freeze()
        proxy.cut()
        await asyncio.sleep(0.5)  # reconnecting now, into the silence
        raise RuntimeError("the part failed here")

    run.ceilings = failing_ceilings
    asyncio.run(run.main(quick=True, only=None))
    """
)


def test_a_failed_part_prints_its_traceback_and_exits() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FAILING_RUN],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,  # without the bench's own exit it waits here for ever, printing nothing
    )
    assert done.returncode == 1, done.stderr
    assert "RuntimeError: the part failed here" in done.stderr
