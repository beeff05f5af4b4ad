"""`make audit`: pip-audit over the locked dependency set (requirements.lock).

Findings fail the run unless `deploy/audit-accepted.txt` names them (one vulnerability
id a line, `#` and the reason after it), so every accepted finding is explained.
A run that audited nothing — the vulnerability service unreachable, or every package
skipped — is reported as exactly that, never as clean: with `--strict` (CI on a
machine that reaches the service) it fails, without it it warns and exits 0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACCEPTED = ROOT / "deploy" / "audit-accepted.txt"


def accepted() -> set[str]:
    ids = set()
    for line in ACCEPTED.read_text().splitlines():
        vuln_id = line.split("#", 1)[0].strip()
        if vuln_id:
            ids.add(vuln_id)
    return ids


def audit() -> tuple[dict[str, object] | None, str]:
    command = [
        sys.executable, "-m", "pip_audit",
        "--requirement", str(ROOT / "requirements.lock"),
        "--no-deps", "--disable-pip", "--format", "json", "--progress-spinner", "off",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    try:
        return json.loads(done.stdout), done.stderr
    except json.JSONDecodeError:
        return None, done.stderr or done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strict", action="store_true", help="fail when nothing was audited")
    strict = parser.parse_args().strict
    report, errors = audit()
    deps = (report or {}).get("dependencies", [])
    assert isinstance(deps, list)
    audited = [d for d in deps if "skip_reason" not in d]
    if not audited:
        skipped = [str(d.get("skip_reason")) for d in deps]
        reason = skipped[0] if skipped else (errors.strip().splitlines() or ["no report"])[0]
        print(f"audit: NOT RUN - no package could be checked; first reason: {reason}")
        return 1 if strict else 0
    known = accepted()
    findings = [(d["name"], d["version"], v["id"]) for d in audited for v in d.get("vulns", [])]
    open_findings = [f for f in findings if f[2] not in known]
    for name, version, vuln_id in findings:
        state = "accepted (deploy/audit-accepted.txt)" if vuln_id in known else "OPEN"
        print(f"audit: {name} {version}: {vuln_id} {state}")
    skipped = len(deps) - len(audited)
    print(f"audit: {len(audited)} packages checked, {skipped} skipped, {len(open_findings)} open")
    return 1 if open_findings else 0


if __name__ == "__main__":
    sys.exit(main())
