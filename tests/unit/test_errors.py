"""Error bodies per family, and the README's code table kept equal to the code."""

from __future__ import annotations

import re
from pathlib import Path

from shared.errors import ApiError, Family, SmsCode, codes_of

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_the_readme_lists_exactly_the_codes() -> None:
    documented = set(re.findall(r"^\| ([A-Z]+\.\d{4,8}) \| (\d{3}) \|", README, re.M))
    every = {(c.code, str(c.status)) for f in Family for c in codes_of(f)}
    assert documented == every


def test_codes_are_unique() -> None:
    codes = [c.code for f in Family for c in codes_of(f)]
    assert len(codes) == len(set(codes))


def test_403_has_the_seed_pages_shape() -> None:
    body = ApiError(SmsCode.FORBIDDEN, "no", ["You may not"]).body()
    assert set(body) == {
        "error_code",
        "error_msg",
        "encoded_authorization_message",
        "error_param",
        "details",
    }
    assert body["details"] == [{"error_code": "SMS.9004", "error_msg": "You may not"}]


def test_other_errors_have_code_and_message_only() -> None:
    assert ApiError(SmsCode.SOURCE_NOT_FOUND).body() == {
        "error_code": "SMS.2001",
        "error_msg": SmsCode.SOURCE_NOT_FOUND.title,
    }


def test_zstack_shape() -> None:
    body = ApiError(SmsCode.INTERNAL, "boom").in_family(Family.ZSTACK).body()
    assert body["error"]["code"] == "SYS.1000" and body["error"]["details"] == "boom"
    assert {"description", "elaboration", "opaque", "cause"} <= set(body["error"])


def test_generic_errors_translate_between_families() -> None:
    coc = ApiError(SmsCode.INVALID_PARAMETER, "bad").in_family(Family.COC)
    assert coc.body() == {"error_code": "COC.00040001", "error_msg": "bad"}
    assert ApiError(SmsCode.SOURCE_NOT_FOUND).in_family(Family.COC).code == SmsCode.SOURCE_NOT_FOUND


def test_coc_codes_have_eight_digits() -> None:
    for code in codes_of(Family.COC):
        assert re.fullmatch(r"COC\.\d{8}", code.code), code
