"""The bench's machine probe: which units of work it counts as run by a slow core."""

from __future__ import annotations

import pytest

from bench import machine


@pytest.fixture(autouse=True)
def fresh_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "_fast_us", [float("inf")])


def test_one_unit_timed_short_does_not_count_every_other_slow() -> None:
    units = [190.0] + [240.0 + i % 60 for i in range(399)]
    assert machine.machine([1.0], units, 0.0).slow_share < 0.05


def test_units_at_two_speeds_count_the_slow_ones() -> None:
    units = [1400.0] * 70 + [2300.0] * 30
    assert machine.machine([1.0], units, 0.0).slow_share == pytest.approx(0.30)


def test_a_probe_that_saw_only_slow_cores_is_judged_by_the_fast_speed_seen_before() -> None:
    machine.machine([1.0], [1400.0] * 50 + [2300.0] * 50, 0.0)
    assert machine.machine([1.0], [2300.0] * 40, 0.0).slow_share == 1.0
