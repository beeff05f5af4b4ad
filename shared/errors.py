"""Errors are values of one type, rendered once per API family (SMS, COC, ZStack).

Every stable error code Rehost answers with is listed here; the README's table is
checked against this module by a test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Family(StrEnum):
    SMS = "sms"
    COC = "coc"
    ZSTACK = "zstack"


@dataclass(frozen=True)
class Code:
    code: str
    status: int
    title: str


class SmsCode:
    """Stable SMS.xxxx codes. 9004 is the seed pages' own permission code."""

    INVALID_PARAMETER = Code("SMS.1001", 400, "A request parameter is invalid")
    MALFORMED_BODY = Code("SMS.1002", 400, "The request body is not valid JSON")
    BODY_TOO_LARGE = Code("SMS.1003", 413, "The request body is too large")
    SOURCE_NOT_FOUND = Code("SMS.2001", 404, "The source server does not exist")
    SOURCE_CONFLICT = Code("SMS.2002", 409, "Another source server already has this identity")
    STATE_NOT_SETTABLE = Code("SMS.2003", 400, "The state is changed by commands, not by register")
    SOURCE_HAS_TASK = Code("SMS.2004", 409, "The source server belongs to a migration task")
    TRANSITION_REFUSED = Code("SMS.2005", 409, "The source server's state does not allow this")
    TASK_NOT_FOUND = Code("SMS.3001", 404, "The migration task does not exist")
    TARGET_LOCKED = Code("SMS.3002", 409, "The target server is locked by another task")
    TASK_STATE_CONFLICT = Code("SMS.3003", 409, "The task's state does not allow this operation")
    OPERATION_UNSUPPORTED = Code("SMS.3004", 400, "The operation is not supported")
    TASK_FENCED = Code("SMS.3005", 409, "The task no longer holds its target server's lock")
    ROUTE_NOT_FOUND = Code("SMS.1004", 404, "No such API")
    METHOD_NOT_ALLOWED = Code("SMS.1005", 405, "Method not allowed on this API")
    TOKEN_MISSING = Code("SMS.9001", 401, "The X-Auth-Token header is missing")
    TOKEN_INVALID = Code("SMS.9002", 401, "The token is invalid")
    TOKEN_EXPIRED = Code("SMS.9003", 401, "The token has expired")
    FORBIDDEN = Code("SMS.9004", 403, "The current account does not have the permission")
    INTERNAL = Code("SMS.9500", 500, "Internal error")
    UNAVAILABLE = Code("SMS.9503", 503, "The service is temporarily unavailable; retry later")
    BUSY = Code("SMS.9504", 503, "Too many requests in flight; retry later")


ALL_CODES: dict[Family, type] = {Family.SMS: SmsCode}


def codes_of(family: Family) -> list[Code]:
    holder = ALL_CODES[family]
    return [v for v in vars(holder).values() if isinstance(v, Code)]


@dataclass
class ApiError(Exception):
    """An error the API answers with; `family` picks the body shape."""

    code: Code
    message: str = ""
    params: list[str] = field(default_factory=list)
    family: Family = Family.SMS

    def __post_init__(self) -> None:
        super().__init__(self.message or self.code.title)

    @property
    def status(self) -> int:
        return self.code.status

    def body(self) -> dict[str, Any]:
        return render(self.family, self.code, self.message or self.code.title, self.params)


def render(family: Family, code: Code, message: str, params: list[str]) -> dict[str, Any]:
    if family is Family.ZSTACK:
        return {"error": {"code": code.code, "description": code.title, "details": message}}
    body: dict[str, Any] = {"error_code": code.code, "error_msg": message}
    if code.status == 403:
        detail = params[0] if params else message
        body["encoded_authorization_message"] = ""
        body["error_param"] = params or [detail]
        body["details"] = [{"error_code": code.code, "error_msg": detail}]
    return body
