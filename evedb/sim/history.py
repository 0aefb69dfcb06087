"""What a simulated run observed, for the checks at its end (see checks.py).

Owns the record of: every commit point of every node (seq -> batch and state root), the
acknowledgements clients received, the timeline of the highest committed seq, violations seen
while running (misuse of the engine, a committed state going backwards), and a trace of
decisions and faults (`brief` writes a peer message in one line for it).  Recording never
changes the run.
"""

from __future__ import annotations

import bisect

from dataclasses import dataclass, field

from ..messages import Batch, Reply, Request


@dataclass(frozen=True, slots=True)
class Ack:
    """A reply a client accepted as the answer to its outstanding request."""

    request: Request
    reply: Reply
    node: str
    first_sent_ms: int
    received_ms: int


@dataclass(slots=True)
class History:
    # node -> seq -> the batch it committed there (None: reached by state transfer).
    committed_batches: dict[str, dict[int, Batch | None]] = field(default_factory=dict)
    # node -> seq -> the state root right after seq, as committed there.
    commit_roots: dict[str, dict[int, bytes]] = field(default_factory=dict)
    acks: list[Ack] = field(default_factory=list)
    commit_times: list[int] = field(default_factory=list)  # when the highest committed seq grew
    commit_maxima: list[int] = field(default_factory=list)  # ... and to what
    violations: list[str] = field(default_factory=list)
    trace: list[tuple[int, str, str]] = field(default_factory=list)

    def note(self, now_ms: int, who: str, text: str) -> None:
        self.trace.append((now_ms, who, text))

    def violation(self, now_ms: int, who: str, text: str) -> None:
        self.violations.append(f"t={now_ms} {who}: {text}")
        self.note(now_ms, who, f"VIOLATION {text}")

    def record_commit(self, now_ms: int, node: str, seq: int, batch: Batch | None, root: bytes) -> None:
        roots = self.commit_roots.setdefault(node, {})
        batches = self.committed_batches.setdefault(node, {})
        if seq in roots and roots[seq] != root:
            self.violation(now_ms, node, f"seq {seq} committed twice with different state roots")
        if batch is not None and batches.get(seq) is not None and batches[seq] != batch:
            self.violation(now_ms, node, f"seq {seq} committed twice with different batches")
        roots[seq] = root
        if batch is not None or seq not in batches:
            batches[seq] = batch
        if not self.commit_maxima or seq > self.commit_maxima[-1]:
            self.commit_times.append(now_ms)
            self.commit_maxima.append(seq)

    def max_committed_at(self, now_ms: int) -> int:
        """The highest seq committed on any node at or before now_ms."""
        index = bisect.bisect_right(self.commit_times, now_ms)
        return self.commit_maxima[index - 1] if index else 0

    def format_trace(self, last: int | None = None) -> list[str]:
        lines = [f"t={when:>6} {who}: {text}" for when, who, text in self.trace]
        if last is None:
            return lines
        return lines[-last:] if last > 0 else []


def brief(message) -> str:
    """A peer message in one short line (batches by seq and size only)."""
    fields = []
    for name in message.__slots__:
        value = getattr(message, name)
        if name == "batch":
            value = f"<seq {value.seq} view {value.view} x{len(value.requests)}>"
        elif name == "entries":
            value = f"<{len(value)} entries {value[0][0].seq}..{value[-1][0].seq}>" if value else "<>"
        elif name in ("token", "schema_hash", "state_root"):
            value = value.hex()[:8]
        elif name == "pages":
            value = f"<{len(value)} pages>"
        fields.append(f"{name}={value}")
    return f"{type(message).__name__}({', '.join(fields)})"
