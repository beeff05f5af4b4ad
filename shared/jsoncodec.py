"""JSON for the hot paths (store rows, outbox entries, event bodies): orjson, with the
standard library as the fallback for what orjson refuses (integers past 64 bits).

Every register and command result is encoded several times on its way through a
service (document, outbox entry, event body); orjson does each in a fraction of
the time, and the bytes it writes are plain JSON that `json` reads back alike.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> str:
    return dump_bytes(value).decode()


def dump_bytes(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value).encode()


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
