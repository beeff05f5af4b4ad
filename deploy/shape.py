"""The deployment shape deploy-check holds the manifests to: a three-node broker cluster
and at least two replicas of every process but the sample agent.

Usage: shape.py COMPOSE_CONFIG RENDERED_KUSTOMIZATION (both YAML, as rendered)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

PROCESSES = ("gateway", "registry", "command-result", "task-lock", "script-executor")


def compose_problems(config: dict[str, Any]) -> list[str]:
    services = config["services"]
    brokers = [name for name in services if name.startswith("rabbitmq-")]
    problems = [] if len(brokers) == 3 else [f"compose: {len(brokers)} broker nodes, not 3"]
    for name in PROCESSES:
        replicas = services[name].get("deploy", {}).get("replicas", 1)
        if replicas < 2:
            problems.append(f"compose: {name} has {replicas} replica(s)")
    return problems


def kubernetes_problems(documents: list[dict[str, Any]]) -> list[str]:
    problems = []
    brokers = [d for d in documents if d.get("kind") == "RabbitmqCluster"]
    if [d["spec"].get("replicas") for d in brokers] != [3]:
        problems.append("kubernetes: not one RabbitmqCluster of 3 replicas")
    deployments = {d["metadata"]["name"]: d for d in documents if d.get("kind") == "Deployment"}
    for name in PROCESSES:
        replicas = deployments[f"rehost-{name}"]["spec"].get("replicas", 1)
        if replicas < 2:
            problems.append(f"kubernetes: rehost-{name} has {replicas} replica(s)")
    return problems


def main(compose: str, rendered: str) -> int:
    problems = compose_problems(yaml.safe_load(Path(compose).read_text()))
    problems += kubernetes_problems(
        [d for d in yaml.safe_load_all(Path(rendered).read_text()) if d]
    )
    for problem in problems:
        print(f"deploy-check: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
