"""Error bodies of each API family, for the OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class SmsErrorDetail(BaseModel):
    error_code: str
    error_msg: str


class SmsError(BaseModel):
    error_code: str = Field(examples=["SMS.9004"])
    error_msg: str
    encoded_authorization_message: str | None = Field(default=None, description="403 only")
    error_param: list[str] | None = Field(default=None, description="403 only")
    details: list[SmsErrorDetail] | None = Field(default=None, description="403 only")


SMS_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": SmsError, "description": text}
    for status, text in {
        400: "Bad request: a parameter is invalid; the message names it",
        401: "Missing, invalid or expired token",
        403: "The token does not allow this action",
        413: "The request body is too large",
        503: "The broker or the owning service did not answer in time; retry",
    }.items()
}


class CocError(BaseModel):
    error_code: str = Field(examples=["COC.00040701"])
    error_msg: str


class ZstackErrorBody(BaseModel):
    code: str
    description: str
    details: str
    elaboration: str | None = None
    opaque: dict[str, Any] | None = None
    cause: dict[str, Any] | None = None


class ZstackError(BaseModel):
    error: ZstackErrorBody


def _table(model: type[BaseModel], texts: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": model, "description": text} for status, text in texts.items()}


_COMMON = {
    400: "Bad request: a parameter is invalid; the message names it",
    401: "Missing, invalid or expired token",
    403: "The token does not allow this action",
    413: "The request body is too large",
    503: "The broker or the owning service did not answer in time; retry",
}
COC_ERRORS = _table(CocError, _COMMON)
ZSTACK_ERRORS = _table(ZstackError, _COMMON)
