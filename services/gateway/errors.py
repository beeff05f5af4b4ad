"""Every error the gateway answers, in the API family's own shape, mapped to HTTP once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from shared.bus import Overloaded, Unavailable
from shared.errors import ApiError, Family, SmsCode


def family_for(path: str) -> Family:
    if path.startswith("/v1/"):
        return Family.COC
    if path.startswith("/zstack/"):
        return Family.ZSTACK
    return Family.SMS


def error_response(request: Request, error: ApiError) -> JSONResponse:
    """Answers `error` in the shape of the route's API family."""
    return error_answer(error, request.url.path)


def error_answer(error: ApiError, path: str) -> JSONResponse:
    """`error` in the shape of the API family of `path` (for a request the framework has not
    seen: the fast paths)."""
    error = error.in_family(family_for(path))
    return JSONResponse(status_code=error.status, content=error.body())


def unavailable_answer(exc: Unavailable, path: str) -> JSONResponse:
    """503 with `Retry-After`: a service that did not answer, or too much in flight."""
    response = error_answer(unavailable(exc), path)
    response.headers["Retry-After"] = "1"
    return response


def field_path(loc: Sequence[Any]) -> str:
    """`("body", "disks", 0, "name")` → `disks[0].name`."""
    path = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in ("int", "str", "float", "bool", "list", "dict") and not str(
            part
        ).startswith(("constrained-", "function-", "literal[")):
            path += f".{part}" if path else str(part)
    return path or str(loc[0] if loc else "body")


def validation_error(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return ApiError(SmsCode.MALFORMED_BODY, "The request body is not valid JSON.")
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid"}
    name = field_path(first.get("loc", ()))
    fields = sorted({field_path(e.get("loc", ())) for e in errors})
    message = f"Invalid parameter {name}: {first.get('msg', 'invalid value')}."
    if len(fields) > 1:
        message += f" Also invalid: {', '.join(f for f in fields if f != name)}."
    return ApiError(SmsCode.INVALID_PARAMETER, message[:1024], fields[:20])


def unavailable(exc: Unavailable) -> ApiError:
    """503: too many requests in flight, or a service that did not answer in time."""
    return ApiError(SmsCode.BUSY if isinstance(exc, Overloaded) else SmsCode.UNAVAILABLE)


def install(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(request, exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(request, validation_error(exc))

    async def on_unavailable(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Unavailable)
        return unavailable_answer(exc, request.url.path)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = {
            404: SmsCode.ROUTE_NOT_FOUND,
            405: SmsCode.METHOD_NOT_ALLOWED,
            413: SmsCode.BODY_TOO_LARGE,
        }.get(exc.status_code, SmsCode.INVALID_PARAMETER)
        return error_response(request, ApiError(code, str(exc.detail)))

    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        return error_response(request, ApiError(SmsCode.INTERNAL))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Unavailable, on_unavailable)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)
