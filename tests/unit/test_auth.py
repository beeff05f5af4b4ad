from __future__ import annotations

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.auth import TokenExpired, TokenInvalid, TokenMissing, action_matches, mint, verify

SECRET = "unit-secret-unit-secret-unit-secret!"


def test_a_minted_token_verifies_with_its_claims() -> None:
    who = verify(SECRET, mint(SECRET, "d1", ["sms:server:migrationServer"], subject="alice"))
    assert (who.subject, who.domain_id, who.actions) == (
        "alice",
        "d1",
        ("sms:server:migrationServer",),
    )


@pytest.mark.parametrize(
    ("granted", "action", "allowed"),
    [
        ("*", "sms:server:unlock", True),
        ("sms:*", "sms:server:unlock", True),
        ("sms:server:*", "sms:server:unlock", True),
        ("sms:server:unlock", "sms:server:unlock", True),
        ("sms:server:unlock", "sms:server:unlockAll", False),
        ("coc:*", "sms:server:unlock", False),
        ("sms:server", "sms:server:unlock", False),
        ("sms*", "sms:server:unlock", False),
    ],
)
def test_action_matching(granted: str, action: str, allowed: bool) -> None:
    assert action_matches(granted, action) is allowed


@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30))
def test_a_non_wildcard_grant_allows_only_itself(granted: str, action: str) -> None:
    if not granted.endswith("*"):
        assert action_matches(granted, action) == (granted == action)


def test_refusals() -> None:
    with pytest.raises(TokenMissing):
        verify(SECRET, None)
    with pytest.raises(TokenExpired):
        verify(SECRET, mint(SECRET, "d1", ["*"], ttl=-1))
    with pytest.raises(TokenInvalid):
        verify(SECRET, mint("another-secret-another-secret-00000", "d1", ["*"]))
    with pytest.raises(TokenInvalid):
        verify(
            SECRET, jwt.encode({"domain_id": "d1", "actions": ["*"], "exp": 2**40}, None, "none")
        )
    with pytest.raises(TokenInvalid):  # exp is required
        verify(SECRET, jwt.encode({"domain_id": "d1", "actions": ["*"]}, SECRET, "HS256"))
    with pytest.raises(TokenInvalid):
        verify(
            SECRET, jwt.encode({"domain_id": "d1", "actions": "*", "exp": 2**40}, SECRET, "HS256")
        )
