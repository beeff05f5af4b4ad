"""Bounded capture of a process's output: the first `limit` bytes of stdout and stderr
together, in arrival order; the rest is counted and dropped, so a chatty script
cannot grow the agent's memory."""

from __future__ import annotations

from dataclasses import dataclass, field


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
        """stdout (with the dropped-bytes marker when anything was dropped) and stderr."""
        out = self.stdout.decode("utf-8", errors="replace") + self.marker()
        return out, self.stderr.decode("utf-8", errors="replace")
