"""The campaign's checks on made-up histories: a correct one passes, each kind of bug is named."""

from __future__ import annotations

from evedb.faults import checker, workloads
from evedb.faults.scheduler import KINDS, schedule
from evedb.faults.workloads import ACCOUNTS, INITIAL_BALANCE, RING_SIZE, Acknowledged, ClientRecord


def rotate(ring: dict, a: int) -> tuple[int, int, int]:
    b = ring[a]
    c = ring[b]
    d = ring[c]
    ring[a], ring[c], ring[b] = c, b, d
    return b, c, d


def correct_history(rotations: int = 30):
    """A serial run: transfers and rotations, every one acknowledged and recorded."""
    ring = {k: (k + 1) % RING_SIZE for k in range(RING_SIZE)}
    balances = {i: INITIAL_BALANCE for i in range(ACCOUNTS)}
    record = ClientRecord()
    transfers, cycle_ops = [], []
    for index in range(rotations):
        a = (index * 7) % RING_SIZE
        b, c, d = rotate(ring, a)
        op_id = f"c0-r{index}"
        cycle_ops.append((op_id, index + 1, 0, a, b, c, d))
        record.acknowledged.append(Acknowledged("cycle", op_id, (index + 1, 0, a, b, c, d), 0.0))
        source, target, amount = index % ACCOUNTS, (index + 3) % ACCOUNTS, 1 + index % 9
        balances[source] -= amount
        balances[target] += amount
        transfers.append((f"c0-t{index}", source, target, amount))
        record.acknowledged.append(Acknowledged("transfer", f"c0-t{index}", (source, target, amount), 0.0))
    return record, transfers, cycle_ops, sorted(ring.items()), balances


def all_violations(record, transfers, cycle_ops, ring, balances) -> list[str]:
    return (checker.check_exactly_once([record], transfers, cycle_ops) + checker.check_bank(balances, transfers)
            + checker.check_cycle([record], ring, cycle_ops) + checker.check_client_replies([record]))


def test_a_correct_history_passes():
    assert all_violations(*correct_history()) == []


def test_a_lost_acknowledged_transaction_is_found():
    record, transfers, cycle_ops, ring, balances = correct_history()
    lost = transfers.pop(5)
    balances[lost[1]] += lost[3]
    balances[lost[2]] -= lost[3]
    assert all_violations(record, transfers, cycle_ops, ring, balances) == [f"acknowledged transfer {lost[0]} is lost"]


def test_an_unknown_outcome_may_be_recorded_or_not():
    record, transfers, cycle_ops, ring, balances = correct_history()
    unknown = record.acknowledged.pop()  # the client timed out on the last transfer
    record.unknown.append((unknown.op_id, "timeout"))
    assert all_violations(record, transfers, cycle_ops, ring, balances) == []


def test_a_transaction_run_twice_is_found():
    record, transfers, cycle_ops, ring, balances = correct_history()
    twice = transfers[3]
    transfers.append(twice)
    balances[twice[1]] -= twice[3]
    balances[twice[2]] += twice[3]
    violations = all_violations(record, transfers, cycle_ops, ring, balances)
    assert f"{twice[0]} is recorded 2 times" in violations


def test_money_created_is_found():
    record, transfers, cycle_ops, ring, balances = correct_history()
    balances[0] += 5
    violations = checker.check_bank(balances, transfers)
    assert any("bank total" in line for line in violations) and any("replay" in line for line in violations)


def test_a_lost_update_breaks_the_ring_and_is_not_serializable():
    # Two rotations that both read the initial ring (a lost update), their writes both applied.
    ring = {k: (k + 1) % RING_SIZE for k in range(RING_SIZE)}
    first, second = ("c0-1", 1, 0, 0, 1, 2, 3), ("c1-1", 1, 1, 1, 2, 3, 4)
    for _, _, _, a, b, c, d in (first, second):
        ring[a], ring[c], ring[b] = c, b, d
    record = ClientRecord(acknowledged=[Acknowledged("cycle", row[0], row[1:], 0.0) for row in (first, second)])
    violations = checker.check_cycle([record], sorted(ring.items()), [first, second])
    assert any(line.startswith("ring broken") for line in violations)
    assert any(line.startswith("not serializable: rotation c1-1") for line in violations)


def test_two_rotations_claiming_one_batch_position_are_found():
    record, transfers, cycle_ops, ring, balances = correct_history()
    op_id, seq, position, *rest = cycle_ops[-1]
    cycle_ops[-1] = (op_id, cycle_ops[-2][1], cycle_ops[-2][2], *rest)
    assert any("claim batch seq" in line for line in checker.check_cycle([record], ring, cycle_ops))


def test_a_reply_that_differs_from_the_record_is_found():
    record, transfers, cycle_ops, ring, balances = correct_history()
    record.acknowledged[0] = Acknowledged("cycle", "c0-r0", (1, 0, 0, 9, 9, 9), 0.0)
    assert any("the client was told" in line for line in checker.check_cycle([record], ring, cycle_ops))


def test_ring_problem_names_a_short_cycle():
    pairs = [(k, (k + 1) % RING_SIZE) for k in range(RING_SIZE)]
    assert workloads.ring_problem(pairs) is None
    pairs[3] = (3, 0)
    assert "returns to 0" in workloads.ring_problem(pairs)


def test_roots_must_be_equal():
    assert checker.check_roots([{"state_root": "a", "committed_seq": 3}] * 2) == []
    assert checker.check_roots([{"state_root": "a", "committed_seq": 3}, {"state_root": "b", "committed_seq": 3}])


def test_the_schedule_is_a_pure_function_of_the_seed():
    assert schedule(7, 50) == schedule(7, 50)
    assert schedule(7, 50) != schedule(8, 50)
    faults = schedule(7, 500, peer_timeout_ms=1000)
    assert {fault.kind for fault in faults} == set(KINDS)
    for fault in faults:  # link faults between the nodes stay inside the synchronous model
        if fault.kind in ("peer_stall", "peer_drop"):
            assert fault.duration_s <= 0.5
    assert {fault.kind for fault in schedule(7, 50, kinds=("kill",))} == {"kill"}
