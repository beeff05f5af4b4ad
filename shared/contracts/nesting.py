"""How deep a JSON body may nest: no deeper than every store can keep.

MongoDB refuses documents nested deeper than 100 levels, and a stored body sits a
few levels down (a document's `data`, an event's `data.server` in the outbox), so
bodies are held to 64. The check reads the raw text, before any parser recurses.
"""

from __future__ import annotations

import re

MAX_DEPTH = 64

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]")


def nests_deeper(raw: bytes | str, limit: int = MAX_DEPTH) -> bool:
    """True when the JSON text opens more than `limit` arrays or objects at once."""
    text = raw.encode() if isinstance(raw, str) else raw
    # Most bodies hold fewer brackets than the limit: nothing to scan.
    if text.count(b"[") + text.count(b"{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", text))
    depth = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        if depth > limit:
            return True
    return False
