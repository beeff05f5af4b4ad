"""FastAPI dependencies as `Annotated` aliases: the bus requester and the caller's principal."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Request

from shared.auth import Principal, TokenExpired, TokenInvalid, TokenMissing, verify
from shared.bus import Requester
from shared.errors import ApiError, SmsCode


def get_requester(request: Request) -> Requester:
    requester: Requester = request.app.state.requester
    return requester


Bus = Annotated[Requester, Depends(get_requester)]


def _authorize(request: Request, token: str | None, action: str) -> Principal:
    try:
        who = verify(request.app.state.settings.auth_secret, token)
    except TokenMissing as exc:
        raise ApiError(SmsCode.TOKEN_MISSING) from exc
    except TokenExpired as exc:
        raise ApiError(SmsCode.TOKEN_EXPIRED) from exc
    except TokenInvalid as exc:
        raise ApiError(SmsCode.TOKEN_INVALID) from exc
    if not who.allows(action):
        detail = f"You do not have permission to perform action {action} on resource server."
        message = f"The current account does not have the permission to execute policy. {detail}"
        raise ApiError(SmsCode.FORBIDDEN, message, [detail])
    return who


def require(action: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates X-Auth-Token and checks it allows `action`."""

    async def principal(
        request: Request,
        x_auth_token: Annotated[str | None, Header(max_length=16384)] = None,
    ) -> Principal:
        return _authorize(request, x_auth_token, action)

    principal.__name__ = f"require_{action.replace(':', '_')}"
    return principal


def require_oauth(action: str) -> Callable[..., Awaitable[Principal]]:
    """The same for ZStack: the token comes as `Authorization: OAuth <token>`."""

    async def principal(
        request: Request,
        authorization: Annotated[str | None, Header(max_length=16384)] = None,
    ) -> Principal:
        scheme, _, token = (authorization or "").partition(" ")
        return _authorize(request, token.strip() if scheme == "OAuth" else None, action)

    principal.__name__ = f"require_oauth_{action.replace(':', '_')}"
    return principal
