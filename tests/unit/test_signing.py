"""Our verifier against the official SDK's own signer, on requests hypothesis makes up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import signing
from tests.support.sdk import SK, sdk_signed

segment = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/?#\x00"), min_size=1, max_size=8
)
query_value = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    segments=st.lists(segment, min_size=1, max_size=4),
    query=st.lists(
        st.tuples(st.text(min_size=1, max_size=6, alphabet="abcxyz_"), query_value), max_size=4
    ),
    body=st.binary(max_size=64),
)
def test_what_the_sdk_signs_we_verify(
    method: str, segments: list[str], query: list[tuple[str, str]], body: bytes
) -> None:
    path = "/" + "/".join(quote(s, safe="") for s in segments)
    now = datetime.now(UTC).replace(microsecond=0)
    headers, raw_query = sdk_signed(method, path, query, body, now)
    signed = signing.parse_authorization(headers["authorization"])
    signing.verify(
        signed,
        SK,
        method=method,
        raw_path=path,
        raw_query=raw_query,
        headers=headers,
        body=body,
        now=now,
    )
    with pytest.raises(signing.SignatureRefused) as wrong:
        signing.verify(
            signed,
            "other",
            method=method,
            raw_path=path,
            raw_query=raw_query,
            headers=headers,
            body=body,
            now=now,
        )
    assert wrong.value.reason == "bad_signature"
    with pytest.raises(signing.SignatureRefused):
        signing.verify(
            signed,
            SK,
            method=method,
            raw_path=path,
            raw_query=raw_query,
            headers=headers,
            body=body + b"x",
            now=now,
        )


def refusal(headers: dict[str, str], now: datetime) -> str:
    """Why our verifier refuses this GET /v3/sources."""
    signed = signing.parse_authorization(headers["authorization"])
    with pytest.raises(signing.SignatureRefused) as refused:
        signing.verify(
            signed,
            SK,
            method="GET",
            raw_path="/v3/sources",
            raw_query="",
            headers=headers,
            body=b"",
            now=now,
        )
    return refused.value.reason


def test_clock_skew_and_missing_headers() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    old, _ = sdk_signed("GET", "/v3/sources", [], b"", now - timedelta(minutes=16))
    assert refusal(old, now) == "clock_skew"
    fresh, _ = sdk_signed("GET", "/v3/sources", [], b"", now)
    del fresh["x-project-id"]
    assert refusal(fresh, now) == "missing_header"
    with pytest.raises(signing.SignatureRefused) as malformed:
        signing.parse_authorization("SDK-HMAC-SHA256 Access=x")
    assert malformed.value.reason == "malformed"
