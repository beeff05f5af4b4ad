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
from typing import Annotated

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class KeyLine(BaseModel):
    """One line of the file, taken strictly: a value of the wrong type (a string where a
    list is expected, `"false"` for a boolean) refuses the line instead of being coerced
    into wider access than the operator wrote."""

    model_config = ConfigDict(strict=True, extra="forbid")

    ak: Annotated[str, Field(min_length=1)]
    sk: Annotated[str, Field(min_length=1)]
    domain_id: Annotated[str, Field(min_length=1)]
    actions: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    project_ids: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    enabled: bool = True


def parse(text: str) -> dict[str, AccessKey]:
    keys: dict[str, AccessKey] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            item = KeyLine.model_validate_json(line)
        except ValidationError as exc:
            # Never the line itself, nor the input values: the line holds a secret.
            fields = sorted({".".join(map(str, e["loc"])) or "line" for e in exc.errors()})
            log.warning("access_keys.bad_line", line=number, fields=fields)
            continue
        keys[item.ak] = AccessKey(
            ak=item.ak,
            sk=item.sk,
            domain_id=item.domain_id,
            actions=tuple(item.actions),
            project_ids=tuple(item.project_ids),
            enabled=item.enabled,
        )
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
