"""What verifying an SDK signature costs: per request in-process, and on the register path."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
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


def signed_requests(
    url: str, path: str, bodies: list[str]
) -> list[tuple[str, str, dict[str, str]]]:
    """Each body signed by the SDK's own signer, as an SDK client would send it."""
    host = urlsplit(url).netloc
    out = []
    signer = Signer(BasicCredentials(AK, SK, PROJECT))
    for body in bodies:
        request = SdkRequest(
            method="POST",
            schema="http",
            host=host,
            resource_path=path,
            query_params=[],
            header_params={"Content-Type": "application/json", "X-Project-Id": PROJECT},
            body=body.encode(),
        )
        signer.sign(request)
        headers = {k: v for k, v in request.header_params.items() if k.lower() != "host"}
        out.append((path, body, headers))
    return out


def verify_cost_us(body: str, rounds: int = 2000) -> tuple[float, float]:
    """µs per `signing.verify` of one register request, and µs for its bare hashes and HMAC."""
    now = datetime.now(UTC)
    [(_, _, headers)] = signed_requests("http://rehost:8000", "/v3/sources", [body])
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
