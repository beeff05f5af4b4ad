"""Commands an operator sends from the command line, through the broker like any other
command, to the service that owns what they change."""

from __future__ import annotations

from shared.bus import Bus, Requester
from shared.config import Settings
from shared.contracts.scripts import AgentBinding


async def allow_agents(
    settings: Settings,
    agent_sns: list[str],
    domain_id: str,
    vm_uuid: str | None,
    account: str | None,
) -> list[str]:
    """Binds each agent (`coc.agent.allow` to the script-executor); one line per agent."""
    bus = Bus(settings.amqp_url, "rehost-operator")
    await bus.connect()
    try:
        requester = Requester(bus, settings.reply_timeout, max_in_flight=len(agent_sns))
        await requester.start()
        lines = []
        for agent_sn in agent_sns:
            binding = AgentBinding(
                agent_sn=agent_sn, domain_id=domain_id, vm_uuid=vm_uuid, account=account
            )
            reply = await requester.request(
                "coc.agent.allow",
                binding.model_dump_json().encode(),
                domain_id=domain_id,
                actor="operator",
            )
            lines.append(f"{agent_sn}: {'allowed' if reply.status == 200 else reply.body}")
        return lines
    finally:
        await bus.close()
