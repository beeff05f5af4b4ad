"""Verifying Huawei Cloud SDK request signatures (`SDK-HMAC-SHA256`), pure.

The canonical request is built exactly as the official SDKs build it
(`huaweicloudsdkcore.signer.Signer`): method, the path with each segment
re-encoded and a trailing slash, the sorted query, the signed headers lowercased
with trimmed values, and the SHA-256 of the body. The signature is the hex
HMAC-SHA256, keyed by the secret, of
`SDK-HMAC-SHA256\\n<X-Sdk-Date>\\n<sha256(canonical request)>`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote, unquote

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_HASH = hashlib.sha256(b"").hexdigest()
MAX_SKEW_SECONDS = 15 * 60
REQUIRED_SIGNED = frozenset({"host", "x-sdk-date"})
_AUTHORIZATION = re.compile(
    r"^SDK-HMAC-SHA256\s+Access=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-fA-F]+)$"
)


class SignatureRefused(Exception):
    """Why a signed request is refused; `reason` picks the error code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SignedRequest:
    access_key: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> SignedRequest:
    match = _AUTHORIZATION.match(value.strip())
    if match is None:
        raise SignatureRefused(
            "malformed", "The Authorization header is not a valid SDK-HMAC-SHA256 value."
        )
    access, signed, signature = match.groups()
    return SignedRequest(access, tuple(signed.lower().split(";")), signature.lower())


def canonical_uri(raw_path: str) -> str:
    path = "/".join(quote(segment, safe="~") for segment in unquote(raw_path).split("/"))
    return path if path.endswith("/") else path + "/"


def canonical_query(raw_query: str) -> str:
    pairs = sorted(parse_qsl(raw_query, keep_blank_values=True))
    return "&".join(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in pairs)


def payload_hash(body: bytes, headers: Mapping[str, str]) -> str:
    if not body:
        return EMPTY_HASH
    declared = headers.get("x-sdk-content-sha256")
    if declared is not None:
        # The SDKs leave non-JSON bodies unsigned; Rehost's bodies are JSON, so refuse it.
        raise SignatureRefused("bad_signature", "Unsigned request bodies are not accepted.")
    return hashlib.sha256(body).hexdigest()


def canonical_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    signed: tuple[str, ...],
    body: bytes,
) -> str:
    missing = [name for name in signed if headers.get(name) is None]
    if missing:
        raise SignatureRefused(
            "missing_header", f"Signed header {missing[0]} is not in the request."
        )
    lines = "".join(f"{name}:{headers[name].strip()}\n" for name in signed)
    return "\n".join(
        (
            method.upper(),
            canonical_uri(raw_path),
            canonical_query(raw_query),
            lines,
            ";".join(signed),
            payload_hash(body, headers),
        )
    )


def signature(secret: str, date: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    string_to_sign = f"{ALGORITHM}\n{date}\n{digest}"
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def check_date(value: str | None, now: datetime) -> None:
    if not value:
        raise SignatureRefused("missing_header", "The X-Sdk-Date header is missing.")
    try:
        signed_at = datetime.strptime(value, DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise SignatureRefused(
            "malformed", "X-Sdk-Date is not in the form 20260102T030405Z."
        ) from exc
    if abs((now - signed_at).total_seconds()) > MAX_SKEW_SECONDS:
        raise SignatureRefused(
            "clock_skew", "X-Sdk-Date is more than 15 minutes away from the server's clock."
        )


def verify(
    request: SignedRequest,
    secret: str,
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
) -> None:
    """Raises SignatureRefused unless the request was signed with `secret` and is fresh."""
    if not set(request.signed_headers) >= REQUIRED_SIGNED:
        raise SignatureRefused("missing_header", "Host and X-Sdk-Date must be signed.")
    check_date(headers.get("x-sdk-date"), now)
    canonical = canonical_request(
        method, raw_path, raw_query, headers, request.signed_headers, body
    )
    expected = signature(secret, headers["x-sdk-date"], canonical)
    if not hmac.compare_digest(expected, request.signature):
        raise SignatureRefused("bad_signature", "The request signature does not match.")
