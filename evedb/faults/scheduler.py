"""The fault schedule: which fault, on what, for how long, after how long a quiet gap.

A pure function of the seed (nothing here reads a clock or the environment), so a campaign's
plan replays exactly from its printed seed; the timing of the faults against the load is real
and is not replayed.  Targets are roles ("primary", "backup"), resolved when the fault is
injected, because roles move with every failover.

One fault at a time: a primary-backup pair tolerates one failure, so each fault ends (the
node restarts, resumes, the link heals) and the pair recovers before the next one starts.
Faults on the link between the nodes stay shorter than half the peer timeout: a longer stall
or loss is a partition, which the synchronous pair assumes away (DESIGN.md section 4.8).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# What each kind does (the campaign performs them):
KINDS = (
    "kill",                # SIGKILL the target, restart it after `duration_s`
    "kill_mid_transfer",   # kill the backup, restart it, kill it again while it catches up, restart
    "kill_mid_failover",   # kill the primary; once the backup took over, restart the old one and
                           # kill it again while it rejoins; restart
    "pause",               # SIGSTOP the target for `duration_s`, then SIGCONT
    "disk_full",           # the target's writes fail with SQLITE_FULL: it must stop; space back, restart
    "peer_delay",          # add `delay_ms` to both peer links for `duration_s`
    "peer_stall",          # stop forwarding on the target's outgoing peer link for `duration_s`
    "peer_cut",            # reset both peer links (the nodes re-dial)
    "peer_drop",           # lose the bytes on the target's outgoing peer link, then close it
    "client_delay",        # add `delay_ms` to every client connection
    "client_stall",        # stop forwarding client traffic to the target for `duration_s`
    "client_cut",          # reset every client connection
    "client_drop",         # lose client bytes to the target for `duration_s`, then close
)

# Relative weights: node faults are the point; link faults are cheaper and more frequent.
_WEIGHTS = {
    "kill": 4, "kill_mid_transfer": 2, "kill_mid_failover": 2, "pause": 3, "disk_full": 2,
    "peer_delay": 1, "peer_stall": 1, "peer_cut": 2, "peer_drop": 1,
    "client_delay": 1, "client_stall": 1, "client_cut": 1, "client_drop": 1,
}


@dataclass(frozen=True, slots=True)
class Fault:
    number: int
    kind: str
    target: str  # "primary", "backup" or "both" (link faults on every link)
    gap_s: float  # quiet time under load before the fault starts
    duration_s: float  # how long the fault lasts (0 for an instant fault: a cut)
    delay_ms: int = 0

    def describe(self) -> str:
        extra = f" delay {self.delay_ms} ms" if self.delay_ms else ""
        return f"#{self.number} {self.kind} on {self.target} for {self.duration_s:.2f}s after {self.gap_s:.2f}s{extra}"


def schedule(seed: int, count: int, *, peer_timeout_ms: int = 1000, kinds: tuple[str, ...] = KINDS) -> list[Fault]:
    """The first `count` faults of campaign `seed`.  The same arguments give the same list."""
    generator = random.Random(f"evedb-faults-{seed}")
    chosen = [kind for kind in KINDS if kind in kinds]
    if not chosen:
        raise ValueError(f"no fault kinds chosen (known: {', '.join(KINDS)})")
    weights = [_WEIGHTS[kind] for kind in chosen]
    link_limit_s = peer_timeout_ms / 2000
    faults = []
    for number in range(1, count + 1):
        kind = generator.choices(chosen, weights)[0]
        target = generator.choice(("primary", "backup"))
        gap_s = round(generator.uniform(0.3, 1.5), 2)
        delay_ms = 0
        if kind in ("kill", "disk_full"):
            duration_s = generator.uniform(0.2, 2.5)
        elif kind == "kill_mid_transfer":
            target, duration_s = "backup", generator.uniform(1.0, 3.0)
        elif kind == "kill_mid_failover":
            target, duration_s = "primary", generator.uniform(0.2, 1.0)
        elif kind == "pause":
            # Both sides of the peer timeout: a short pause is a hiccup, a long one a failover.
            duration_s = generator.choice((generator.uniform(0.1, link_limit_s), generator.uniform(1.5, 3.0)))
        elif kind in ("peer_cut", "client_cut"):
            target, duration_s = "both", 0.0
        elif kind == "peer_delay":
            target, duration_s, delay_ms = "both", generator.uniform(0.5, 3.0), generator.randint(5, 60)
        elif kind == "client_delay":
            target, duration_s, delay_ms = "both", generator.uniform(0.5, 3.0), generator.randint(5, 200)
        elif kind in ("peer_stall", "peer_drop"):
            duration_s = generator.uniform(0.05, link_limit_s)
        else:  # client_stall, client_drop
            duration_s = generator.uniform(0.2, 3.0)
        faults.append(Fault(number, kind, target, gap_s, round(duration_s, 2), delay_ms))
    return faults
