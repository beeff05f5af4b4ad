"""What verifying an SDK signature costs: per request in-process, and on the register path."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from shared import signing

AK, SK, PROJECT = "AKBENCH0000000000001", "bench-secret-key", "bench-project"


def key_line(domain: str) -> str:
    return json.dumps(
        {
            "ak": AK,
            "sk": SK,
            "domain_id": domain,
            "project_ids": [PROJECT],
            "actions": ["*"],
            "enabled": True,
        }
    )


def signer(url: str) -> Callable[[str, str, str], dict[str, str]]:
    """Signs (method, path, body) with the SDK's own signer, as an SDK client sends it to
    `url`: the headers to send (the Host header is the client's own)."""
    host = urlsplit(url).netloc
    sdk = Signer(BasicCredentials(AK, SK, PROJECT))

    def sign(method: str, path: str, body: str) -> dict[str, str]:
        request = SdkRequest(
            method=method,
            schema="http",
            host=host,
            resource_path=path,
            query_params=[],
            header_params={"Content-Type": "application/json", "X-Project-Id": PROJECT},
            body=body.encode(),
        )
        sdk.sign(request)
        return {k: v for k, v in request.header_params.items() if k.lower() != "host"}

    return sign


def signed_requests(
    url: str, requests: Sequence[tuple[str, str]], method: str = "POST"
) -> list[tuple[str, str, dict[str, str]]]:
    """Each (path, body) with the headers the SDK signs it with."""
    sign = signer(url)
    return [(path, body, sign(method, path, body)) for path, body in requests]


def verify_cost_us(body: str, rounds: int = 2000) -> tuple[float, float]:
    """µs per `signing.verify` of one register request, and µs for its bare hashes and HMAC."""
    now = datetime.now(UTC)
    [(_, _, headers)] = signed_requests("http://rehost:8000", [("/v3/sources", body)])
    lowered = {k.lower(): v for k, v in headers.items()} | {"host": "rehost:8000"}
    parsed = signing.parse_authorization(lowered["authorization"])
    raw = body.encode()
    started = time.perf_counter()
    for _ in range(rounds):
        signing.verify(
            parsed,
            SK,
            method="POST",
            raw_path="/v3/sources",
            raw_query="",
            headers=lowered,
            body=raw,
            now=now,
        )
    verify = (time.perf_counter() - started) / rounds * 1e6
    started = time.perf_counter()
    for _ in range(rounds):
        digest = hashlib.sha256(raw).hexdigest()
        hmac.new(SK.encode(), digest.encode(), hashlib.sha256).hexdigest()
    floor = (time.perf_counter() - started) / rounds * 1e6
    return verify, floor
