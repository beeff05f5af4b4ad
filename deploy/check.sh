#!/usr/bin/env bash
# Validates what cannot run here: the compose file (docker-compose config) and the
# Kubernetes manifests (kustomize render, then the Kubernetes schemas, offline).
# No Dockerfile linter installs from the registries this project may use; see README.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v docker-compose >/dev/null; then
  echo "deploy-check: installing Debian's docker-compose to validate docker-compose.yml"
  { apt-get install -y -q docker-compose || { apt-get update -q && apt-get install -y -q docker-compose; }; } >/dev/null
fi
composed=$(mktemp)
rendered=$(mktemp)
trap 'rm -f "$composed" "$rendered"' EXIT
docker-compose --env-file .env.example -f docker-compose.yml config > "$composed"
echo "deploy-check: docker-compose.yml is valid"

command -v kubectl >/dev/null || { echo "deploy-check: kubectl is required" >&2; exit 1; }
for overlay in deploy/k8s/overlays/*/; do
  kubectl kustomize "$overlay" > "$rendered"
  # The RabbitmqCluster is the operator's custom resource: no schema of it ships offline,
  # so the validator warns that it skipped it; its shape is checked below.
  .venv/bin/kubernetes-validate --strict --quiet "$rendered"
  echo "deploy-check: $overlay renders and validates ($(grep -c '^kind:' "$rendered") resources)"
  .venv/bin/python deploy/shape.py "$composed" "$rendered"
  echo "deploy-check: three broker nodes and two replicas of every process, in both"
done
