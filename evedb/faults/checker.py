"""After a campaign: does the database hold exactly what the clients were told?

Owns the checks, each a pure function of what the clients recorded and what the database
holds (so they are unit-tested on made-up histories):
- acknowledged exactly once: every transfer and rotation a client saw acknowledged is recorded
  once; nothing is recorded that no client sent; a transaction with an unknown outcome (a
  client timeout) may be recorded once or not at all;
- the bank: the total is constant and every balance equals a replay of the recorded transfers
  (so each recorded transfer moved its money exactly once);
- the ring: following `next` from 0 visits all N rows once;
- the Cycle history is serializable in the order the pair claims: replaying the recorded
  rotations in (batch seq, position) order from the initial ring, each rotation reads exactly
  the b, c, d it recorded, and the replay ends at the ring the database holds; every
  acknowledged rotation's reply equals its record (what the client saw is what committed);
- both nodes settle at one state root and one committed seq.

Each failed check is one line in the returned list of violations; the list is empty when all hold.
"""

from __future__ import annotations

from collections import Counter

from .workloads import ACCOUNTS, INITIAL_BALANCE, RING_SIZE, ClientRecord, ring_problem


def check_exactly_once(records: list[ClientRecord], transfers: list[tuple], cycle_ops: list[tuple]) -> list[str]:
    """`transfers`: rows (id, source, target, amount); `cycle_ops`: (id, seq, position, a, b, c, d)."""
    violations = []
    recorded = Counter([row[0] for row in transfers] + [row[0] for row in cycle_ops])
    for op_id, count in sorted(recorded.items()):
        if count > 1:
            violations.append(f"{op_id} is recorded {count} times")
    acknowledged = {ack.op_id: ack for record in records for ack in record.acknowledged}
    unknown = {op_id for record in records for op_id, _ in record.unknown}
    for op_id in sorted(set(acknowledged) - set(recorded)):
        violations.append(f"acknowledged {acknowledged[op_id].kind} {op_id} is lost")
    for op_id in sorted(set(recorded) - set(acknowledged) - unknown):
        violations.append(f"{op_id} is recorded but no client was told of it or left it unknown")
    by_id = {row[0]: row for row in transfers}
    for op_id, ack in sorted(acknowledged.items()):
        if ack.kind == "transfer" and op_id in by_id and tuple(by_id[op_id][1:]) != ack.detail:
            violations.append(f"transfer {op_id} is recorded as {by_id[op_id][1:]}, the client sent {ack.detail}")
    return violations


def check_bank(balances: dict[int, int], transfers: list[tuple]) -> list[str]:
    violations = []
    total = sum(balances.values())
    if total != ACCOUNTS * INITIAL_BALANCE:
        violations.append(f"bank total is {total}, not {ACCOUNTS * INITIAL_BALANCE}")
    replay = {account: INITIAL_BALANCE for account in range(ACCOUNTS)}
    for _, source, target, amount in transfers:
        replay[source] -= amount
        replay[target] += amount
    if replay != balances:
        wrong = sorted(k for k in replay if replay[k] != balances.get(k))[:5]
        violations.append(f"balances differ from a replay of the recorded transfers (accounts {wrong})")
    return violations


def check_cycle(records: list[ClientRecord], ring: list[tuple], cycle_ops: list[tuple]) -> list[str]:
    violations = []
    problem = ring_problem(ring)
    if problem:
        violations.append(f"ring broken: {problem}")
    positions = Counter((row[1], row[2]) for row in cycle_ops)
    for where, count in sorted(positions.items()):
        if count > 1:
            violations.append(f"{count} rotations claim batch seq {where[0]} position {where[1]}")
    replay = {k: (k + 1) % RING_SIZE for k in range(RING_SIZE)}
    for op_id, seq, position, a, b, c, d in sorted(cycle_ops, key=lambda row: (row[1], row[2], row[0])):
        seen = (replay[a], replay[replay[a]], replay[replay[replay[a]]])
        if seen != (b, c, d):
            violations.append(f"not serializable: rotation {op_id} at seq {seq} position {position} read "
                              f"{(b, c, d)} after {a}, a serial replay gives {seen}")
            break  # the replay is off the rails from here on
        replay[a], replay[c], replay[b] = c, b, d
    else:
        if replay != dict(ring):
            violations.append("the ring differs from a serial replay of the recorded rotations")
    by_id = {row[0]: tuple(row[1:]) for row in cycle_ops}
    for record in records:
        for ack in record.acknowledged:
            if ack.kind == "cycle" and ack.op_id in by_id and by_id[ack.op_id] != tuple(ack.detail):
                violations.append(f"rotation {ack.op_id}: the client was told {ack.detail}, "
                                  f"the database recorded {by_id[ack.op_id]}")
    return violations


def check_client_replies(records: list[ClientRecord]) -> list[str]:
    return [line for record in records for line in record.wrong_replies]


def check_roots(statuses: list[dict]) -> list[str]:
    roots = {(status["state_root"], status["committed_seq"]) for status in statuses}
    if len(roots) != 1:
        return [f"nodes settled at different states: {sorted(roots)}"]
    return []
