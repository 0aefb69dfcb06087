"""The race workload: a read-modify-write whose outcome depends on the order it runs in.

`race_step(db, counter_id, addend)` reads a counter's value v, writes v' = (3 v + addend) mod
p and records the step in `race_step` under a batch-ordered id.  The map is affine with a
distinct addend per call, so two steps on one counter give a different value (and different
replies) in either order: any order other than the batch's shows in the state root and in
the replies.  The reply is the step row itself (id, counter, old, new), so a client can check
afterwards that what it was told is exactly what the committed history holds.

Its mixer rule (`race_rules.toml`) is correct: calls on one counter conflict.  A race needs
the mixer to be wrong (`serve --mixer-false-negative-rate`) and writes split across workers
(`serve --parallel-writers`); bench/race_masking.py measures what then happens.
"""

from __future__ import annotations

import evedb

MODULUS = (1 << 61) - 1  # a prime: v -> 3 v + a is a bijection, values stay below 2^63

SCHEMA = (
    "CREATE TABLE race_counter(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
    "CREATE TABLE race_step(id INTEGER PRIMARY KEY, counter_id INTEGER NOT NULL, "
    "old INTEGER NOT NULL, new INTEGER NOT NULL)",
)


def initial_value(counter_id: int) -> int:
    return 1000 + counter_id


@evedb.procedure
def race_step(db, counter_id, addend):
    old = db.execute("SELECT v FROM race_counter WHERE id = ?", (counter_id,)).scalar()
    if old is None:
        raise ValueError(f"no counter {counter_id}")
    new = (3 * old + addend) % MODULUS
    db.execute("UPDATE race_counter SET v = ? WHERE id = ?", (new, counter_id))
    step_id = db.new_id()
    db.execute("INSERT INTO race_step(id, counter_id, old, new) VALUES (?, ?, ?, ?)",
               (step_id, counter_id, old, new))
    return [(step_id, counter_id, old, new)]


def create(connection, counters: int) -> None:
    """The schema and `counters` counters at their initial values, through an evedb DSN."""
    for statement in SCHEMA:
        connection.execute(statement)
    connection.cursor().executemany("INSERT INTO race_counter VALUES (?, ?)",
                                    [(c, initial_value(c)) for c in range(counters)])


def check_history(replies, steps, counters) -> dict:
    """Whether every reply a client received is what the committed history holds.

    replies: (step_id, counter_id, old, new) as clients received them; steps: every committed
    `race_step` row; counters: {counter_id: committed value}.  For each counter the committed
    steps must form one chain from its initial value to its committed value (each step's old
    value is the previous step's new one), and each reply must equal its committed step: a
    reply from an execution that was rolled back would name values the history lacks.
    """
    by_id = {row[0]: tuple(row) for row in steps}
    mismatched = [reply for reply in replies if by_id.get(reply[0]) != tuple(reply)]
    broken_chains = []
    for counter_id, final in sorted(counters.items()):
        by_old = {}
        for row in steps:
            if row[1] == counter_id:
                by_old.setdefault(row[2], []).append(row)
        value, walked = initial_value(counter_id), 0
        while value in by_old and len(by_old[value]) == 1:
            value = by_old.pop(value)[0][3]
            walked += 1
        if by_old or value != final:
            broken_chains.append(counter_id)
    return {
        "replies_checked": len(replies),
        "replies_not_in_committed_history": len(mismatched),
        "committed_steps": len(steps),
        "counters_with_broken_chain": broken_chains,
        "consistent": not mismatched and not broken_chains,
    }
