"""The agent process: `rehost agent --agent-sn SN [--vm-uuid UUID]`.

It consumes only its own queue, `rehost.agent.<SN>`, runs what arrives there, and
publishes to `rehost.events` under `agent.<SN>.*` only: a heartbeat every few
seconds and `agent.<SN>.finished` for every run. A run is acknowledged when it
starts, so an agent that dies mid-run never runs it twice; the executor marks
such a host TIMEOUT. At most `REHOST_AGENT_PARALLEL` runs go at once; the others wait,
unacknowledged, in its queue. Its events carry its broker account as the AMQP
`user_id`, which RabbitMQ checks and the executor matches against the agent's binding.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections import deque
from datetime import UTC, datetime

import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import ChannelPreconditionFailed
from pydantic import ValidationError
from yarl import URL

from shared.bus import Bus, Unavailable
from shared.config import Settings
from shared.contracts.scripts import AgentRun, Heartbeat, RunFinished
from shared.envelope import build_message
from shared.failover import node_urls
from shared.logs import configure_logging
from shared.service import wait_until_up
from shared.telemetry import setup_tracing
from shared.topology import AGENT_QUEUE, EVENTS, agent_queue

from .runner import Runner

log = structlog.get_logger(__name__)


# Deliveries held beyond the runs going at once, so that a cancel is not stuck behind
# runs waiting for a slot.
CANCEL_HEADROOM = 16


class Agent:
    def __init__(
        self,
        bus: Bus,
        agent_sn: str,
        vm_uuid: str | None,
        vm_name: str | None,
        domain_id: str,
        parallel: int = 4,
    ) -> None:
        self.bus = bus
        self.agent_sn = agent_sn
        self.vm_uuid = vm_uuid
        self.vm_name = vm_name
        self.domain_id = domain_id
        self.parallel = parallel
        self.runner = Runner(agent_sn)
        self.account = URL(node_urls(bus.url)[0]).user  # one account on every node
        self._slots = asyncio.Semaphore(parallel)
        # Runs in tasks of their own: a delivery's task ends with its channel, and a run
        # must outlive a connection lost (and taken up again on another node) meanwhile.
        self._runs: set[asyncio.Task[None]] = set()
        # Cancels of runs not running here (waiting, or long finished): the latest few.
        self._canceled: deque[str] = deque(maxlen=1024)

    async def start(self) -> None:
        queue = await self._own_queue()
        await queue.consume(self._on_message)

    async def _own_queue(self) -> AbstractQueue:
        """Its queue, a quorum queue replicated over the cluster's nodes, so that runs
        waiting for it outlive the loss of one; a classic one an earlier release declared
        is kept as it is (delete it while the agent is stopped to have it replicated)."""
        prefetch = self.parallel + CANCEL_HEADROOM
        name = agent_queue(self.agent_sn)
        channel = await self.bus.new_channel(prefetch=prefetch)
        try:
            return await channel.declare_queue(name, durable=True, arguments=AGENT_QUEUE)
        except ChannelPreconditionFailed:
            log.warning("agent.queue_not_replicated", queue=name)
            channel = await self.bus.new_channel(prefetch=prefetch)
            return await channel.declare_queue(name, passive=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            job = AgentRun.model_validate_json(message.body)
        except ValidationError as exc:
            log.warning("run.malformed", error=str(exc))
            await message.reject(requeue=False)
            return
        if job.kind == "cancel":
            await message.ack()
            if not self.runner.cancel(job.run_id):
                self._canceled.append(job.run_id)  # it may still be waiting for a slot
            return
        await self._slots.acquire()  # waiting, the delivery stays unacked in the queue
        try:
            await message.ack()  # at most once: a lost run becomes TIMEOUT at the executor
        except BaseException:
            self._slots.release()
            raise
        task = asyncio.create_task(self._in_slot(job))
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)

    async def _in_slot(self, job: AgentRun) -> None:
        try:
            if job.run_id in self._canceled:
                await self._publish("finished", self.runner.canceled(job))
                return
            await self._run(job)
        finally:
            self._slots.release()

    async def _run(self, job: AgentRun) -> None:
        log.info("run.started", run_id=job.run_id, kind=job.kind, timeout=job.timeout)
        try:
            result = await self.runner.run(job)
        except Exception as exc:  # the host must still hear back, whatever went wrong here
            log.exception("run.crashed", run_id=job.run_id)
            result = self.runner.failed(job, f"the agent could not run it: {exc!r}")
        log.info(
            "run.finished", run_id=job.run_id, status=result.status, exit_code=result.exit_code
        )
        await self._publish("finished", result)

    async def _publish(self, what: str, body: RunFinished | Heartbeat) -> None:
        key = f"agent.{self.agent_sn}.{what}"
        message = build_message(body.model_dump_json().encode(), key, domain_id=self.domain_id)
        message.user_id = self.account
        while True:
            try:
                await self.bus.publish(EVENTS, message, key)
                return
            except Unavailable as exc:
                if what == "heartbeat":
                    return
                log.warning("report.retrying", error=str(exc))
                await asyncio.sleep(1)

    async def heartbeats(self, every: float) -> None:
        while True:
            beat = Heartbeat(
                agent_sn=self.agent_sn,
                vm_uuid=self.vm_uuid,
                vm_name=self.vm_name,
                hostname=socket.gethostname(),
                running=self.runner.running,
                at=datetime.now(UTC).isoformat(),
            )
            await self._publish("heartbeat", beat)
            await asyncio.sleep(every)


async def run_agent(
    settings: Settings, agent_sn: str, vm_uuid: str | None, vm_name: str | None
) -> None:
    configure_logging(f"agent-{agent_sn}", settings.log_format, settings.log_level)
    setup_tracing("agent")
    bus = Bus(settings.agent_amqp_url or settings.amqp_url, f"rehost-agent-{agent_sn}")
    await wait_until_up("broker", bus.connect_plain)
    agent = Agent(bus, agent_sn, vm_uuid, vm_name, settings.agent_domain, settings.agent_parallel)
    await agent.start()
    beating = asyncio.create_task(agent.heartbeats(settings.agent_heartbeat))
    log.info("agent.started", queue=agent_queue(agent_sn))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    beating.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await beating
    await bus.close()
