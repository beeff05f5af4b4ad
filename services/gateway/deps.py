"""FastAPI dependencies as `Annotated` aliases: the bus requester and the caller's principal.

A caller proves who it is with a token (`X-Auth-Token`, or `Authorization: OAuth …`
on ZStack routes) or, as the official Huawei Cloud SDKs do, by signing the request
with an access key (`Authorization: SDK-HMAC-SHA256 …`). Either way it becomes a
`Principal`, and the same permission and tenant checks follow.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from starlette.types import Scope

from shared import signing
from shared.access_keys import AccessKeys
from shared.auth import Principal, TokenExpired, TokenInvalid, TokenMissing, VerifiedTokens
from shared.bulk import BulkSender
from shared.bus import Requester
from shared.errors import ApiError, SmsCode

from .next_commands import NextCommands


async def get_requester(request: Request) -> Requester:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a hand-off per request.
    requester: Requester = request.app.state.requester
    return requester


RequesterDep = Annotated[Requester, Depends(get_requester)]


@dataclass(frozen=True)
class Senders:
    """The requests a fleet sends most, sent many at a time when many wait (shared/bulk.py)."""

    registers: BulkSender
    results: BulkSender
    progress: BulkSender

    @classmethod
    def over(cls, requester: Requester) -> Senders:
        timeout = requester.timeout
        return cls(
            # Two register bulks on the way per tenant: with one, the registry sat idle
            # between answering a bulk and receiving the next (0.60 of a core at 64
            # connections); with two, 1,088–1,210 → 1,313–1,316 registers/s, the p99 at half
            # that rate 9–11 → 14–15 ms. Results keep one: theirs is the tail that matters,
            # and a second bulk on the way lengthened it (README, Benchmarks).
            registers=BulkSender(requester, "sms.source.register", timeout, lanes=2),
            results=BulkSender(requester, "sms.source.report_result", timeout),
            progress=BulkSender(requester, "sms.task.progress", timeout),
        )


async def get_senders(request: Request) -> Senders:
    senders: Senders = request.app.state.senders
    return senders


SendersDep = Annotated[Senders, Depends(get_senders)]


async def get_next_commands(request: Request) -> NextCommands:
    next_commands: NextCommands = request.app.state.next_commands
    return next_commands


NextCommandsDep = Annotated[NextCommands, Depends(get_next_commands)]

REFUSALS = {
    "malformed": SmsCode.SIGNATURE_MALFORMED,
    "missing_header": SmsCode.SIGNATURE_MALFORMED,
    "bad_signature": SmsCode.SIGNATURE_INVALID,
    "clock_skew": SmsCode.CLOCK_SKEW,
}


def _from_token(request: Request, token: str | None) -> Principal:
    try:
        tokens: VerifiedTokens = request.app.state.tokens
        return tokens.verify(token)
    except TokenMissing as exc:
        raise ApiError(SmsCode.TOKEN_MISSING) from exc
    except TokenExpired as exc:
        raise ApiError(SmsCode.TOKEN_EXPIRED) from exc
    except TokenInvalid as exc:
        raise ApiError(SmsCode.TOKEN_INVALID) from exc


def signed_caller(
    keys: AccessKeys, authorization: str, scope: Scope, body: bytes, now: datetime
) -> Principal:
    """The caller an SDK-signed request proves to be (`scope`: the request's ASGI scope),
    for the routes and for the fast paths in front of them; raises the ApiError a refused
    signature answers."""
    try:
        signed = signing.parse_authorization(authorization)
        key = keys.get(signed.access_key)
        if key is None:
            raise ApiError(SmsCode.AK_UNKNOWN, "The access key is unknown.")
        if not key.enabled:
            raise ApiError(SmsCode.AK_DISABLED, "The access key is disabled.")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        signing.verify(
            signed,
            key.sk,
            method=scope["method"],
            raw_path=scope.get("raw_path", b"").decode("latin-1") or scope["path"],
            raw_query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
            now=now,
        )
        _check_covered(headers, signed.signed_headers)
    except signing.SignatureRefused as exc:
        raise ApiError(REFUSALS[exc.reason], str(exc)) from exc
    _check_scope(headers, key.domain_id, key.project_ids)
    return Principal(subject=f"ak:{key.ak}", domain_id=key.domain_id, actions=key.actions)


def fast_caller(
    state: Any, token: str | None, authorization: str | None, scope: Scope, body: bytes
) -> Principal | None:
    """The caller, for a fast path in front of the routes: a token this process has already
    verified, or a valid SDK signature. None leaves the request to its route, which answers
    whatever is wrong with it in the API's shape."""
    if authorization is not None:
        if not authorization.startswith(signing.ALGORITHM):
            return None
        try:
            return signed_caller(state.access_keys, authorization, scope, body, datetime.now(UTC))
        except ApiError:
            return None
    tokens: VerifiedTokens = state.tokens
    return tokens.known(token) if token else None


async def _from_signature(request: Request, authorization: str) -> Principal:
    keys: AccessKeys = request.app.state.access_keys
    body = await request.body()
    return signed_caller(keys, authorization, request.scope, body, datetime.now(UTC))


# Headers that change what a request does: a signed request must sign them, or a captured
# request could be replayed with another value.
MUST_BE_SIGNED = ("x-idempotency-key",)


def _check_covered(headers: dict[str, str], signed_headers: tuple[str, ...]) -> None:
    for name in MUST_BE_SIGNED:
        if name in headers and name not in signed_headers:
            raise signing.SignatureRefused(
                "missing_header", f"The {name} header must be signed when it is sent."
            )


def _check_scope(headers: dict[str, str], domain_id: str, project_ids: tuple[str, ...]) -> None:
    """The SDK names the domain or project it acts in; the key must cover it."""
    asked_domain = headers.get("x-domain-id")
    asked_project = headers.get("x-project-id")
    if asked_domain and asked_domain != domain_id:
        forbid(f"The access key does not act in domain {asked_domain}.")
    if asked_project and project_ids and asked_project not in project_ids:
        forbid(f"The access key does not act in project {asked_project}.")


def forbid(detail: str) -> None:
    message = f"The current account does not have the permission to execute policy. {detail}"
    raise ApiError(SmsCode.FORBIDDEN, message, [detail])


async def authenticate(request: Request, token: str | None) -> Principal:
    authorization = request.headers.get("authorization", "")
    if authorization.startswith(signing.ALGORITHM):
        return await _from_signature(request, authorization)
    return _from_token(request, token)


def _allowed(who: Principal, action: str) -> Principal:
    if not who.allows(action):
        forbid(f"You do not have permission to perform action {action} on resource server.")
    return who


def require(action: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller (token in X-Auth-Token, or SDK signature), allowed `action`."""

    async def principal(
        request: Request,
        x_auth_token: Annotated[str | None, Header(max_length=16384)] = None,
    ) -> Principal:
        return _allowed(await authenticate(request, x_auth_token), action)

    principal.__name__ = f"require_{action.replace(':', '_')}"
    return principal


def require_oauth(action: str) -> Callable[..., Awaitable[Principal]]:
    """The same for ZStack: the token comes as `Authorization: OAuth <token>`."""

    async def principal(
        request: Request,
        authorization: Annotated[str | None, Header(max_length=16384)] = None,
    ) -> Principal:
        scheme, _, token = (authorization or "").partition(" ")
        who = await authenticate(request, token.strip() if scheme == "OAuth" else None)
        return _allowed(who, action)

    principal.__name__ = f"require_oauth_{action.replace(':', '_')}"
    return principal
