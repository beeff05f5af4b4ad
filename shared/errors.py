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
    AK_UNKNOWN = Code("SMS.9005", 401, "The access key is unknown")
    AK_DISABLED = Code("SMS.9006", 401, "The access key is disabled")
    SIGNATURE_INVALID = Code("SMS.9007", 401, "The request signature does not match")
    CLOCK_SKEW = Code("SMS.9008", 401, "X-Sdk-Date is too far from the server's clock")
    SIGNATURE_MALFORMED = Code("SMS.9009", 401, "The signature is malformed or incomplete")
    FORBIDDEN = Code("SMS.9004", 403, "The current account does not have the permission")
    INTERNAL = Code("SMS.9500", 500, "Internal error")
    UNAVAILABLE = Code("SMS.9503", 503, "The service is temporarily unavailable; retry later")
    BUSY = Code("SMS.9504", 503, "Too many requests in flight; retry later")


class CocCode:
    """Stable COC.xxxxxxxx codes (eight digits, as the seed's `COC.00040701`)."""

    INVALID_PARAMETER = Code("COC.00040001", 400, "A request parameter is invalid")
    MALFORMED_BODY = Code("COC.00040002", 400, "The request body is not valid JSON")
    BODY_TOO_LARGE = Code("COC.00040003", 413, "The request body is too large")
    ROUTE_NOT_FOUND = Code("COC.00040004", 404, "No such API")
    METHOD_NOT_ALLOWED = Code("COC.00040005", 405, "Method not allowed on this API")
    TOKEN_MISSING = Code("COC.00040101", 401, "The X-Auth-Token header is missing")
    TOKEN_INVALID = Code("COC.00040102", 401, "The token is invalid")
    TOKEN_EXPIRED = Code("COC.00040103", 401, "The token has expired")
    AK_UNKNOWN = Code("COC.00040104", 401, "The access key is unknown")
    AK_DISABLED = Code("COC.00040105", 401, "The access key is disabled")
    SIGNATURE_INVALID = Code("COC.00040106", 401, "The request signature does not match")
    CLOCK_SKEW = Code("COC.00040107", 401, "X-Sdk-Date is too far from the server's clock")
    SIGNATURE_MALFORMED = Code("COC.00040108", 401, "The signature is malformed or incomplete")
    FORBIDDEN = Code("COC.00040301", 403, "The current account does not have the permission")
    SCRIPT_NOT_FOUND = Code("COC.00040401", 404, "The script does not exist")
    EXECUTION_NOT_FOUND = Code("COC.00040402", 404, "The script execution does not exist")
    BATCH_NOT_FOUND = Code("COC.00040403", 404, "The batch or instance does not exist")
    EXECUTION_STATE_CONFLICT = Code(
        "COC.00040901", 409, "The execution's state does not allow this"
    )
    INTERNAL = Code("COC.00050001", 500, "Internal error")
    UNAVAILABLE = Code("COC.00050301", 503, "The service is temporarily unavailable; retry later")
    BUSY = Code("COC.00050302", 503, "Too many requests in flight; retry later")


class ZstackCode:
    """ZStack-style codes (`SYS.1000`, `VM.1001`)."""

    INVALID_PARAMETER = Code("SYS.1007", 400, "Invalid argument")
    MALFORMED_BODY = Code("SYS.1008", 400, "The request body is not valid JSON")
    BODY_TOO_LARGE = Code("SYS.1009", 413, "The request body is too large")
    ROUTE_NOT_FOUND = Code("SYS.1010", 404, "No such API")
    METHOD_NOT_ALLOWED = Code("SYS.1011", 405, "Method not allowed on this API")
    TOKEN_MISSING = Code("ID.1001", 401, "The Authorization: OAuth header is missing")
    TOKEN_INVALID = Code("ID.1002", 401, "The session is invalid")
    TOKEN_EXPIRED = Code("ID.1003", 401, "The session has expired")
    AK_UNKNOWN = Code("ID.1005", 401, "The access key is unknown")
    AK_DISABLED = Code("ID.1006", 401, "The access key is disabled")
    SIGNATURE_INVALID = Code("ID.1007", 401, "The request signature does not match")
    CLOCK_SKEW = Code("ID.1008", 401, "X-Sdk-Date is too far from the server's clock")
    SIGNATURE_MALFORMED = Code("ID.1009", 401, "The signature is malformed or incomplete")
    FORBIDDEN = Code("ID.1004", 403, "The session does not have the permission")
    VM_NOT_FOUND = Code("SYS.1006", 404, "The VM instance does not exist or has no agent")
    AGENT_OFFLINE = Code("VM.1001", 503, "The VM's agent is offline")
    COMMAND_TIMEOUT = Code("VM.1002", 503, "The command did not finish within commandTimeout")
    COMMAND_FAILED = Code("VM.1003", 200, "The command exited with a non-zero status")
    INTERNAL = Code("SYS.1000", 500, "Internal error")
    UNAVAILABLE = Code("SYS.1001", 503, "The service is temporarily unavailable; retry later")
    BUSY = Code("SYS.1002", 503, "Too many requests in flight; retry later")


ALL_CODES: dict[Family, type] = {
    Family.SMS: SmsCode,
    Family.COC: CocCode,
    Family.ZSTACK: ZstackCode,
}


def codes_of(family: Family) -> list[Code]:
    holder = ALL_CODES[family]
    return [v for v in vars(holder).values() if isinstance(v, Code)]


def family_of(code: Code) -> Family:
    if code.code.startswith("SMS."):
        return Family.SMS
    if code.code.startswith("COC."):
        return Family.COC
    return Family.ZSTACK


def equivalent(code: Code, family: Family) -> Code:
    """The same kind of error in another family: SMS.1001 is COC.00040001 on a COC route."""
    for name, value in vars(ALL_CODES[family_of(code)]).items():
        if value == code:
            found = getattr(ALL_CODES[family], name, code)
            return found if isinstance(found, Code) else code
    return code


@dataclass
class ApiError(Exception):
    """An error the API answers with; `family` picks the body shape."""

    code: Code
    message: str = ""
    params: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message or self.code.title)

    @property
    def status(self) -> int:
        return self.code.status

    def body(self) -> dict[str, Any]:
        return render(self.code, self.message or self.code.title, self.params)

    def in_family(self, family: Family) -> ApiError:
        return ApiError(equivalent(self.code, family), self.message, self.params)


def render(code: Code, message: str, params: list[str]) -> dict[str, Any]:
    if family_of(code) is Family.ZSTACK:
        return {
            "error": {
                "code": code.code,
                "description": code.title,
                "details": message,
                "elaboration": None,
                "opaque": None,
                "cause": None,
            }
        }
    body: dict[str, Any] = {"error_code": code.code, "error_msg": message}
    if code.status == 403:
        detail = params[0] if params else message
        body["encoded_authorization_message"] = ""
        body["error_param"] = params or [detail]
        body["details"] = [{"error_code": code.code, "error_msg": detail}]
    return body
