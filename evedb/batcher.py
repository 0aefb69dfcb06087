"""Grouping client requests into numbered batches, bounded by size and by time.

The batcher is part of the deterministic core: it never reads a clock or draws a random
number.  The caller passes the current time (`now_ms`) in; the batch timestamp is that time,
never earlier than the previous batch's, and the batch seed is derived from (view, seq,
timestamp), so every replica that receives the batch executes it identically and a simulator
that feeds the same times gets the same batches.

A batch is cut when it holds `max_requests`, or when its oldest request has waited
`max_delay_ms` (0: cut at the first poll, which is what an embedded database wants).
"""

from __future__ import annotations

from collections import deque

import xxhash

from .messages import Batch, Request


class Batcher:
    def __init__(self, max_requests: int = 256, max_delay_ms: int = 0, next_seq: int = 1, view: int = 0):
        if max_requests < 1:
            raise ValueError("max_requests must be at least 1")
        if max_delay_ms < 0:
            raise ValueError("max_delay_ms must not be negative")
        self.max_requests = max_requests
        self.max_delay_ms = max_delay_ms
        self.next_seq = next_seq
        self.view = view
        self.last_timestamp_ms = 0
        self._pending: deque[tuple[Request, int]] = deque()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, request: Request, now_ms: int) -> None:
        self._pending.append((request, now_ms))

    def deadline_ms(self) -> int | None:
        """When the oldest pending request's batch must be cut, or None if nothing waits."""
        if not self._pending:
            return None
        return self._pending[0][1] + self.max_delay_ms

    def poll(self, now_ms: int) -> Batch | None:
        """A batch if one is due now, else None."""
        if not self._pending:
            return None
        if len(self._pending) < self.max_requests and now_ms < self.deadline_ms():
            return None
        return self.cut(now_ms)

    def cut(self, now_ms: int) -> Batch | None:
        """Cut a batch of what is pending now, due or not."""
        if not self._pending:
            return None
        count = min(self.max_requests, len(self._pending))
        requests = tuple(self._pending.popleft()[0] for _ in range(count))
        timestamp_ms = max(now_ms, self.last_timestamp_ms)
        self.last_timestamp_ms = timestamp_ms
        seq = self.next_seq
        self.next_seq += 1
        seed = xxhash.xxh64_intdigest(f"{self.view}:{seq}:{timestamp_ms}".encode()) >> 1
        return Batch(seq, self.view, timestamp_ms, seed, requests)
