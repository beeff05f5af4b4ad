"""Requests signed by the official Huawei Cloud SDK's own signer, as its clients send them."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from shared import signing

AK, SK, PROJECT = "AKUNITTEST0000000001", "unit-secret", "p1"


def sdk_signed(
    method: str,
    path: str,
    query: list[tuple[str, str]],
    body: bytes,
    when: datetime,
    secret: str = SK,
) -> tuple[dict[str, str], str]:
    """The headers the SDK sends (names in lower case, `host` among them) and the query."""
    headers = {
        "Content-Type": "application/json",
        "X-Project-Id": PROJECT,
        "X-Sdk-Date": when.strftime(signing.DATE_FORMAT),
    }
    request = SdkRequest(
        method=method,
        schema="http",
        host="rehost.test:8000",
        resource_path=path,
        query_params=list(query),
        header_params=headers,
        body=body,
    )
    Signer(BasicCredentials(AK, secret, PROJECT)).sign(request)
    signed = {k.lower(): v for k, v in request.header_params.items()}
    raw_query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
    return signed, raw_query


def key_file(folder: Path, domain_id: str, actions: list[str], enabled: bool = True) -> Path:
    """An access-keys file (REHOST_ACCESS_KEYS) holding the key `sdk_signed` signs with."""
    path = folder / "access-keys.jsonl"
    line = {
        "ak": AK,
        "sk": SK,
        "domain_id": domain_id,
        "project_ids": [PROJECT],
        "actions": actions,
        "enabled": enabled,
    }
    path.write_text(json.dumps(line) + "\n")
    return path
