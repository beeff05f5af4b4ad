"""What an agent sends of a run's output fits the message limit, whatever the bytes."""

from __future__ import annotations

import json

from services.agent.capture import Capture, cut_to, encoded_size

LIMIT = 1_048_576


def test_a_megabyte_of_nul_bytes_is_cut_to_the_json_budget_and_counted() -> None:
    capture = Capture(LIMIT)
    capture.feed("stdout", b"\0" * LIMIT)
    out, err = capture.texts()
    assert encoded_size(out) + encoded_size(err) <= 2 * LIMIT + 100
    assert capture.dropped > LIMIT // 2
    assert out.endswith(f"[rehost: {capture.dropped} bytes of output dropped]")


def test_plain_text_within_the_limit_is_sent_whole() -> None:
    capture = Capture(LIMIT)
    capture.feed("stdout", b"line\n" * 200_000)  # 1,000,000 bytes, 1,200,000 as JSON
    out, _ = capture.texts()
    assert out == "line\n" * 200_000 and capture.dropped == 0


def test_cut_to_keeps_the_longest_prefix_that_fits() -> None:
    text = "ab\0cd"
    for budget in range(2, 20):
        kept = cut_to(text, budget)
        assert len(json.dumps(kept)) <= budget or kept == ""
        assert kept == text or len(json.dumps(text[: len(kept) + 1])) > budget
