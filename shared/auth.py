"""Tokens: an HS256 JWT carrying the tenant (`domain_id`) and the IAM-style actions it allows.

`X-Auth-Token` (SMS, COC) and `Authorization: OAuth <token>` (ZStack) carry the same
token. Actions match exactly or by a trailing wildcard: `*`, `sms:*`, `sms:server:*`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"


class TokenMissing(Exception):
    pass


class TokenInvalid(Exception):
    pass


class TokenExpired(TokenInvalid):
    pass


@dataclass(frozen=True)
class Principal:
    subject: str
    domain_id: str
    actions: tuple[str, ...]
    expires_at: float = float("inf")  # a token's `exp`

    def allows(self, action: str) -> bool:
        return any(action_matches(granted, action) for granted in self.actions)


def action_matches(granted: str, action: str) -> bool:
    if granted == "*" or granted == action:
        return True
    return granted.endswith(":*") and action.startswith(granted[:-1])


def mint(
    secret: str, domain_id: str, actions: list[str], subject: str = "", ttl: int = 3600
) -> str:
    now = int(time.time())
    claims = {
        "sub": subject or f"user@{domain_id}",
        "domain_id": domain_id,
        "actions": actions,
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: str, token: str | None) -> Principal:
    if not token:
        raise TokenMissing()
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "domain_id", "actions"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenExpired(str(exc)) from exc
    except jwt.PyJWTError as exc:
        raise TokenInvalid(str(exc)) from exc
    domain_id, actions = claims["domain_id"], claims["actions"]
    if not isinstance(domain_id, str) or not domain_id:
        raise TokenInvalid("domain_id must be a non-empty string")
    if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
        raise TokenInvalid("actions must be a list of strings")
    return Principal(
        subject=str(claims.get("sub", "")),
        domain_id=domain_id,
        actions=tuple(actions),
        expires_at=float(claims["exp"]),
    )


class VerifiedTokens:
    """Tokens this process has verified, by their exact text, until they expire.

    An agent sends the same token on every poll, a few seconds apart; checking its
    signature and claims again each time was a fifth of what a poll cost the gateway.
    Only a token that passed `verify` is kept, and only that exact text finds it (the
    signature is part of it), so nothing is trusted that was not checked once.
    """

    def __init__(self, secret: str, capacity: int = 65_536) -> None:
        self.secret = secret
        self.capacity = capacity
        self._verified: dict[str, Principal] = {}

    def known(self, token: str) -> Principal | None:
        """The token's principal if it was verified here and has not expired; else None."""
        principal = self._verified.get(token)
        if principal is None or principal.expires_at <= time.time():
            return None
        return principal

    def verify(self, token: str | None) -> Principal:
        known = self.known(token) if token else None
        if known is not None:
            return known
        principal = verify(self.secret, token)
        if len(self._verified) >= self.capacity:
            self._verified.clear()  # a flood of distinct tokens costs re-verifying, not memory
        self._verified[token or ""] = principal
        return principal
