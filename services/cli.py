"""The `rehost` command line: run the system or one process, mint tokens, print schemas."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from typing import Annotated

import typer

from shared.config import get_settings

app = typer.Typer(help="Rehost: a self-hosted control plane for server migration.")

# Every process of the system, as `make run` starts them.
PROCESSES = {
    "gateway": "gateway",
    "registry": "registry",
    "command-result": "command-result",
    "task-lock": "task-lock",
    "script-executor": "script-executor",
}
SERVICES = {
    "registry": "services.registry.main:REGISTRY",
    "command-result": "services.command_result.main:COMMAND_RESULT",
    "task-lock": "services.task_lock.main:TASK_LOCK",
    "script-executor": "services.script_executor.main:SCRIPT_EXECUTOR",
}


def _run_service(name: str) -> None:
    from shared.service import run_service

    module, attr = SERVICES[name].split(":")
    definition = getattr(__import__(module, fromlist=[attr]), attr)
    _install_uvloop()
    asyncio.run(run_service(definition, get_settings()))


def _install_uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        pass


@app.command()
def gateway(
    workers: Annotated[int | None, typer.Option(help="uvicorn worker processes")] = None,
) -> None:
    """Run the HTTP gateway."""
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "services.gateway.app:create_server",
        factory=True,
        host=settings.gateway_host,
        port=settings.gateway_port,
        workers=workers or settings.gateway_workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


@app.command()
def registry() -> None:
    """Run the registry service (source servers)."""
    _run_service("registry")


@app.command("command-result")
def command_result() -> None:
    """Run the command-result service (agent commands and their results)."""
    _run_service("command-result")


@app.command("task-lock")
def task_lock() -> None:
    """Run the task-lock service (migration tasks and target-server locks)."""
    _run_service("task-lock")


@app.command("script-executor")
def script_executor() -> None:
    """Run the script-executor service (scripts on fleets, guest-VM commands)."""
    _run_service("script-executor")


@app.command()
def agent(
    agent_sn: Annotated[str, typer.Option("--agent-sn", help="this agent's serial number")],
    vm_uuid: Annotated[str | None, typer.Option("--vm-uuid", help="the guest VM it serves")] = None,
    vm_name: Annotated[str | None, typer.Option("--vm-name", help="the VM's name")] = None,
) -> None:
    """Run the agent of one managed host or guest VM."""
    from services.agent.main import run_agent

    # The plain asyncio loop: uvloop's subprocesses cannot switch to another user.
    asyncio.run(run_agent(get_settings(), agent_sn, vm_uuid, vm_name))


@app.command()
def run(
    only: Annotated[list[str] | None, typer.Option(help="run only these processes")] = None,
) -> None:
    """Run the whole system in the foreground, logs prefixed. A process that crashes is
    started again after a back-off; Ctrl-C or SIGTERM stops them all."""
    from shared.logs import configure_logging

    from .supervisor import Child, Supervisor

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    configure_logging("supervisor", settings.log_format, settings.log_level)
    children = [
        Child(name, [sys.executable, "-m", "services.cli", command], dict(os.environ))
        for name, command in PROCESSES.items()
        if not only or name in only
    ]
    asyncio.run(Supervisor(children).run())


@app.command()
def token(
    domain: Annotated[str, typer.Option(help="the tenant's domain_id")],
    action: Annotated[list[str], typer.Option(help="an allowed action; repeat for more")],
    ttl: Annotated[int, typer.Option(help="seconds until it expires")] = 3600,
    subject: Annotated[str, typer.Option(help="the `sub` claim")] = "",
) -> None:
    """Print a token for X-Auth-Token, signed with REHOST_AUTH_SECRET."""
    from shared.auth import mint

    typer.echo(mint(get_settings().auth_secret, domain, action, subject=subject, ttl=ttl))


keys = typer.Typer(help="Access keys for requests signed by the Huawei Cloud SDKs.")
app.add_typer(keys, name="keys")


@keys.command("create")
def keys_create(
    domain: Annotated[str, typer.Option(help="the tenant's domain_id")],
    action: Annotated[list[str], typer.Option(help="an allowed action; repeat for more")],
    project: Annotated[list[str] | None, typer.Option(help="a project id it may act in")] = None,
) -> None:
    """Print a new access key pair and the line to add to the REHOST_ACCESS_KEYS file."""
    from shared.access_keys import new_key

    key = new_key(domain, action, project or [])
    typer.echo(f"AK: {key.ak}\nSK: {key.sk}\n\nAdd this line to the access-key file:\n{key.line()}")


agents = typer.Typer(help="Agents: which tenant, VM and broker account each one serves with.")
app.add_typer(agents, name="agents")


@agents.command("allow")
def agents_allow(
    agent_sn: Annotated[list[str], typer.Argument(help="the agents' serial numbers")],
    domain: Annotated[str, typer.Option(help="the tenant they serve")],
    vm_uuid: Annotated[str | None, typer.Option(help="the guest VM it serves (one agent)")] = None,
    account: Annotated[
        str | None, typer.Option(help="its RabbitMQ user; its events must then come from it")
    ] = None,
) -> None:
    """Bind agents to a tenant (and a VM, and a broker account). A heartbeat never moves
    a binding; only this does."""
    from shared.operator import allow_agents

    if vm_uuid and len(agent_sn) > 1:
        raise typer.BadParameter("--vm-uuid binds one agent only")
    for line in asyncio.run(allow_agents(get_settings(), agent_sn, domain, vm_uuid, account)):
        typer.echo(line)


dlq = typer.Typer(help="Dead-lettered messages: look at them, and replay them after a fix.")
app.add_typer(dlq, name="dlq")


@dlq.command("replay")
def dlq_replay(
    service: Annotated[str, typer.Argument(help="registry, command-result, task-lock, …")],
    limit: Annotated[int, typer.Option(help="replay at most this many")] = 1000,
    dry_run: Annotated[bool, typer.Option(help="only list what would be replayed")] = False,
) -> None:
    """Moves messages from rehost.<service>.dlq back onto rehost.commands, as they were sent."""
    from shared.replay import replay

    for line in asyncio.run(replay(get_settings().amqp_url, service, limit, dry_run)):
        typer.echo(line)


@app.command()
def watch(
    task: Annotated[str | None, typer.Option("--task", help="one migration task")] = None,
    execution: Annotated[str | None, typer.Option("--execution", help="one execution")] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="every recent task and execution (the default)")
    ] = False,
    gateway: Annotated[
        str | None, typer.Option(help="the gateway's URL; default: REHOST_GATEWAY_HOST/PORT")
    ] = None,
) -> None:
    """Show migrations and script executions live, with progress bars (token: REHOST_TOKEN)."""
    from rich.console import Console

    from .watch import Watched
    from .watch import watch as follow

    token = os.environ.get("REHOST_TOKEN", "")
    if not token:
        raise typer.BadParameter("set REHOST_TOKEN to a token (rehost token …)")
    if everything and (task or execution):
        raise typer.BadParameter("--all watches everything: leave out --task and --execution")
    settings = get_settings()
    url = gateway or f"http://{settings.gateway_host}:{settings.gateway_port}"
    watched = Watched(task_id=task, execute_uuid=execution)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(follow(url, token, watched, Console()))


@app.command()
def schemas() -> None:
    """Print the JSON Schema of every command and event body."""
    from shared.contracts.catalog import json_schemas

    typer.echo(json.dumps(json_schemas(), indent=2))


@app.command()
def lifecycle() -> None:
    """Print the source server lifecycle table as a Mermaid state diagram."""
    from services.registry.lifecycle import mermaid

    typer.echo(mermaid())


if __name__ == "__main__":
    app()
