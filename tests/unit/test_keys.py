"""Keys joined from a tenant and an id never collide across tenants."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.keys import scoped


def test_a_colon_in_a_part_cannot_make_two_keys_one() -> None:
    assert scoped("a:b", "c") != scoped("a", "b:c")
    assert scoped("a%3Ab", "c") != scoped("a:b", "c")


def test_parts_without_colons_read_as_before() -> None:
    assert scoped("domain-a", "vm-1") == "domain-a:vm-1"


@given(st.tuples(st.text(), st.text()), st.tuples(st.text(), st.text()))
def test_different_parts_make_different_keys(a: tuple[str, str], b: tuple[str, str]) -> None:
    assert (scoped(*a) == scoped(*b)) == (a == b)
