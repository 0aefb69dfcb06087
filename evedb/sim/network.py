"""The simulated network's fate of one message: lost, delivered once or twice, and when.

Owns nothing but the per-run fault profile and the seeded `random.Random` it draws from.  The
cluster asks `deliveries()` for every message sent (peer or client link) and schedules one
delivery per delay returned; reordering falls out of independent random delays.

Rules kept: the only randomness is the `random.Random` passed in (seeded by the run); the
number of draws per call does not depend on anything but the profile, so a seed replays
exactly.  `heal()` ends loss and duplication (the quiet tail of a run); delays stay.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LinkFaults:
    loss: float = 0.0  # probability a message is dropped
    duplicate: float = 0.0  # probability a delivered message arrives twice
    min_delay_ms: int = 1
    max_delay_ms: int = 20


class Network:
    def __init__(self, rng: random.Random, faults: LinkFaults):
        self.rng = rng
        self.faults = faults
        self.sent = 0
        self.lost = 0
        self.duplicated = 0

    def heal(self) -> None:
        self.faults = LinkFaults(0.0, 0.0, self.faults.min_delay_ms, self.faults.max_delay_ms)

    def deliveries(self) -> list[int]:
        """Delays (ms) of each delivery of one message: [] lost, [d] once, [d1, d2] duplicated."""
        faults = self.faults
        self.sent += 1
        if self.rng.random() < faults.loss:
            self.lost += 1
            return []
        delays = [self.rng.randint(faults.min_delay_ms, faults.max_delay_ms)]
        if self.rng.random() < faults.duplicate:
            self.duplicated += 1
            delays.append(self.rng.randint(faults.min_delay_ms, faults.max_delay_ms))
        return delays
