"""Access keys for SDK-signed requests, read from the file named by REHOST_ACCESS_KEYS.

One JSON object a line (blank lines and `#` comments are skipped), with the keys
`ak`, `sk`, `domain_id`, `project_ids`, `actions` and `enabled`.

The file is read again when it changes (checked at most once a second), so keys
are added, disabled or removed without a restart. Secrets are never logged.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class AccessKey:
    ak: str
    sk: str = field(repr=False)
    domain_id: str
    actions: tuple[str, ...]
    project_ids: tuple[str, ...] = ()
    enabled: bool = True

    def line(self) -> str:
        return json.dumps(
            {
                "ak": self.ak,
                "sk": self.sk,
                "domain_id": self.domain_id,
                "project_ids": list(self.project_ids),
                "actions": list(self.actions),
                "enabled": self.enabled,
            }
        )


def new_key(domain_id: str, actions: list[str], project_ids: list[str]) -> AccessKey:
    ak = "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(20))
    return AccessKey(ak, secrets.token_urlsafe(30), domain_id, tuple(actions), tuple(project_ids))


def parse(text: str) -> dict[str, AccessKey]:
    keys: dict[str, AccessKey] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            item = json.loads(line)
            key = AccessKey(
                ak=str(item["ak"]),
                sk=str(item["sk"]),
                domain_id=str(item["domain_id"]),
                actions=tuple(item.get("actions", [])),
                project_ids=tuple(item.get("project_ids", [])),
                enabled=bool(item.get("enabled", True)),
            )
        except (ValueError, KeyError, TypeError):
            log.warning("access_keys.bad_line", line=number)  # never the line: it holds a secret
            continue
        keys[key.ak] = key
    return keys


class AccessKeys:
    def __init__(self, path: str | None, check_every: float = 1.0) -> None:
        self.path = Path(path) if path else None
        self.check_every = check_every
        self._keys: dict[str, AccessKey] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0

    def get(self, ak: str) -> AccessKey | None:
        self._reload_if_changed()
        return self._keys.get(ak)

    def _reload_if_changed(self) -> None:
        now = time.monotonic()
        if self.path is None or now - self._checked < self.check_every:
            return
        self._checked = now
        try:
            stat = os.stat(self.path)
        except OSError:
            self._keys, self._stamp = {}, None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._keys = parse(self.path.read_text())
            self._stamp = stamp
            log.info("access_keys.loaded", count=len(self._keys))
