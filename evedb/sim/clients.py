"""Closed-loop simulated clients: one request outstanding each, retried until answered.

Owns each client's id, next request id, outstanding request and the node it believes is the
primary.  The cluster delivers replies and timeouts; the client says what to do next.

Rules kept (those of a real evedb client):
- request ids grow by one per new request; a retry resends the *same* request (same id), so
  the replicated reply cache makes it exactly-once;
- a timeout or a NotPrimary answer sends the retry to the other node;
- a reply for anything but the outstanding request is ignored (a late duplicate);
- the only randomness is the run's `random.Random`, drawn in a fixed order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..messages import Reply, Request
from .store import add_request, get_request, is_read_only

NOT_PRIMARY = "NotPrimary"


@dataclass(slots=True)
class Outstanding:
    request: Request
    first_sent_ms: int
    attempts: int = 0


class SimClient:
    def __init__(self, client_id: str, nodes: tuple[str, str], keys: tuple[str, ...], read_ratio: float):
        self.client_id = client_id
        self.nodes = nodes
        self.target = nodes[0]
        self.keys = keys
        self.read_ratio = read_ratio
        self.next_request_id = 1
        self.outstanding: Outstanding | None = None
        self.send_generation = 0  # a timeout is stale unless it carries the current generation
        self.stopped = False

    def new_request(self, rng: random.Random, now_ms: int) -> Request:
        key = self.keys[rng.randrange(len(self.keys))]
        amount = rng.randint(1, 9)
        request_id, self.next_request_id = self.next_request_id, self.next_request_id + 1
        if rng.random() < self.read_ratio:
            request = get_request(self.client_id, request_id, key)
        else:
            request = add_request(self.client_id, request_id, key, amount)
        self.outstanding = Outstanding(request, now_ms)
        return request

    def switch_target(self) -> None:
        self.target = self.nodes[1] if self.target == self.nodes[0] else self.nodes[0]

    def on_reply(self, reply: Reply) -> str:
        """'ignore', 'retry' (NotPrimary: try the other node) or 'done' (the answer)."""
        current = self.outstanding
        if current is None or (reply.client_id, reply.request_id) != (self.client_id, current.request.request_id):
            return "ignore"
        if reply.error is not None and reply.error.kind == NOT_PRIMARY:
            self.switch_target()
            return "retry"
        return "done"

    @property
    def read_only(self) -> bool:
        return self.outstanding is not None and is_read_only(self.outstanding.request)
