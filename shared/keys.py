"""Keys made of a tenant and an id, that never collide across tenants.

Joining `("a:b", "c")` and `("a", "b:c")` with a bare `:` gives the same key; each part
is escaped first (`%` and `:` only, so a key whose parts hold neither reads as before).
"""

from __future__ import annotations


def scoped(*parts: str) -> str:
    return ":".join(part.replace("%", "%25").replace(":", "%3A") for part in parts)
