"""Bounded capture of a process's output: the first `limit` bytes of stdout and stderr
together, in arrival order; the rest is counted and dropped, so a chatty script
cannot grow the agent's memory.

What is sent is bounded too: the report carries the output as JSON text, where a byte
may take six (`\u0000`), so the texts are cut to `2 × limit` bytes of JSON. A run's
report then always fits the executor's message limit and is delivered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared import jsoncodec


def encoded_size(text: str) -> int:
    return len(jsoncodec.dump_bytes(text))


def cut_to(text: str, budget: int) -> str:
    """The longest prefix of `text` whose JSON encoding takes at most `budget` bytes."""
    if encoded_size(text) <= budget:
        return text
    low, high = 0, min(len(text), budget)
    while low < high:
        middle = (low + high + 1) // 2
        if encoded_size(text[:middle]) <= budget:
            low = middle
        else:
            high = middle - 1
    return text[:low]


@dataclass
class Capture:
    limit: int
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    dropped: int = 0

    @property
    def kept(self) -> int:
        return len(self.stdout) + len(self.stderr)

    def feed(self, stream: str, chunk: bytes) -> None:
        room = max(self.limit - self.kept, 0)
        target = self.stdout if stream == "stdout" else self.stderr
        target.extend(chunk[:room])
        self.dropped += max(len(chunk) - room, 0)

    def marker(self) -> str:
        return f"\n[rehost: {self.dropped} bytes of output dropped]" if self.dropped else ""

    def texts(self) -> tuple[str, str]:
        """stdout (with the dropped-bytes marker when anything was dropped) and stderr,
        together no more than `2 × limit` bytes as JSON."""
        out = self.stdout.decode("utf-8", errors="replace")
        err = self.stderr.decode("utf-8", errors="replace")
        budget = 2 * self.limit
        err = self._cut(err, max(budget // 2, budget - encoded_size(out)))
        out = self._cut(out, budget - encoded_size(err))
        return out + self.marker(), err

    def _cut(self, text: str, budget: int) -> str:
        kept = cut_to(text, budget)
        self.dropped += len(text[len(kept) :].encode())
        return kept
