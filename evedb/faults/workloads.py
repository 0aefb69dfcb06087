"""The fault campaign's workloads and the clients that run them, recording what they saw.

Owns:
- the schema and its initial rows: a bank (`fault_account`, a constant total; `fault_transfer`,
  one row per transfer under a unique id, written in the same transaction as the money moves)
  and FoundationDB's Cycle (`fault_ring`: N rows, each pointing to the next, one ring;
  `fault_cycle_op`, one row per rotation with where it ran);
- the Cycle rotation as a server-side procedure (`faults_cycle_rotate`): it reads a->b->c->d
  and rewires a->c->b->d inside one transaction, records the rotation with the batch seq and
  position it ran at (the order the pair claims it serialized it in), and returns what it read;
- `WorkloadClient`: one thread, one connection, a seeded mix of transfers, rotations and
  read-only checks; it records every acknowledged transaction with its reply, every outcome it
  cannot know (a timeout: the transaction may or may not have run), and every reply that is
  wrong by itself (a read that shows a broken ring or a changed total, an error the workload
  cannot cause).

Rules kept: every id a client sends is unique (client number + sequence), so "present exactly
once" is checkable; a client never retries a transaction under a new id after an unknown
outcome (the driver already retried it under its own request id); all choices come from a
`random.Random` seeded by (campaign seed, client number).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import evedb
from evedb.procedures import procedure

ACCOUNTS = 16
INITIAL_BALANCE = 1000
RING_SIZE = 24

SCHEMA = (
    "CREATE TABLE fault_account(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)",
    "CREATE TABLE fault_transfer(id TEXT PRIMARY KEY, source INTEGER, target INTEGER, amount INTEGER)",
    "CREATE TABLE fault_ring(k INTEGER PRIMARY KEY, next INTEGER NOT NULL)",
    "CREATE TABLE fault_cycle_op(id TEXT PRIMARY KEY, seq INTEGER, position INTEGER, a INTEGER, b INTEGER,"
    " c INTEGER, d INTEGER)",
)

# The procedure's mixer rule: it reads and writes rows it only learns while running, so it
# claims both tables whole (a narrower rule would be a wrong hint: rollbacks, not wrong results).
MIXER_RULES_TOML = """
[procedures.faults_cycle_rotate]
reads = ["fault_ring", "fault_cycle_op"]
writes = ["fault_ring", "fault_cycle_op"]
"""

PROCEDURE_MODULE = __name__


@procedure
def faults_cycle_rotate(db, op_id: str, start: int):
    """Rotate the ring at `start`: a->b->c->d becomes a->c->b->d."""
    b = db.execute("SELECT next FROM fault_ring WHERE k = ?", (start,)).scalar()
    c = db.execute("SELECT next FROM fault_ring WHERE k = ?", (b,)).scalar()
    d = db.execute("SELECT next FROM fault_ring WHERE k = ?", (c,)).scalar()
    db.execute("UPDATE fault_ring SET next = ? WHERE k = ?", (c, start))
    db.execute("UPDATE fault_ring SET next = ? WHERE k = ?", (b, c))
    db.execute("UPDATE fault_ring SET next = ? WHERE k = ?", (d, b))
    db.execute("INSERT INTO fault_cycle_op VALUES (?, ?, ?, ?, ?, ?, ?)", (op_id, db.seq, db.position, start, b, c, d))
    return [(db.seq, db.position, b, c, d)]


def create_schema(dsn: str, timeout: float = 30.0) -> None:
    connection = evedb.connect(dsn, autocommit=True, timeout=timeout)
    try:
        for statement in SCHEMA:
            connection.execute(statement)
        connection.cursor().executemany("INSERT INTO fault_account VALUES (?, ?)",
                                        [(i, INITIAL_BALANCE) for i in range(ACCOUNTS)])
        connection.cursor().executemany("INSERT INTO fault_ring VALUES (?, ?)",
                                        [(k, (k + 1) % RING_SIZE) for k in range(RING_SIZE)])
    finally:
        connection.close()


def ring_problem(pairs) -> str | None:
    """None if `pairs` (k, next) form one ring through every k in 0..RING_SIZE-1, else why not."""
    following = dict(pairs)
    if sorted(following) != list(range(RING_SIZE)):
        return f"the ring has keys {sorted(following)[:8]}... ({len(following)} rows), not 0..{RING_SIZE - 1}"
    seen, node = set(), 0
    for _ in range(RING_SIZE):
        if node in seen:
            return f"following next from 0 returns to {node} after {len(seen)} rows"
        seen.add(node)
        node = following[node]
    if node != 0 or len(seen) != RING_SIZE:
        return f"following next from 0 visits {len(seen)} of {RING_SIZE} rows"
    return None


@dataclass
class Acknowledged:
    """A transaction the client saw succeed, with what its reply said."""

    kind: str  # "transfer" or "cycle"
    op_id: str
    detail: tuple  # transfer: (source, target, amount); cycle: (seq, position, a, b, c, d)
    acknowledged_at: float


@dataclass
class ClientRecord:
    acknowledged: list[Acknowledged] = field(default_factory=list)
    unknown: list[tuple[str, str]] = field(default_factory=list)  # (op id, why)
    wrong_replies: list[str] = field(default_factory=list)
    reads_checked: int = 0


class WorkloadClient(threading.Thread):
    """A closed-loop client: transfers, rotations and read checks until `stop` is set."""

    def __init__(self, dsn: str, seed: int, number: int, stop: threading.Event, *, timeout_s: float = 20.0,
                 think_ms: int = 5):
        super().__init__(daemon=True, name=f"evedb-fault-client-{number}")
        self.dsn, self.number, self.stop = dsn, number, stop
        self.generator = random.Random(seed * 1000 + number)
        self.timeout_s = timeout_s
        self.think_ms = think_ms
        self.record = ClientRecord()
        self._lock = threading.Lock()
        self.last_acknowledged_at = 0.0

    def run(self) -> None:
        connection = evedb.connect(self.dsn, autocommit=True, timeout=self.timeout_s)
        sequence = 0
        try:
            while not self.stop.is_set():
                sequence += 1
                op_id = f"c{self.number}-{sequence}"
                draw = self.generator.random()
                if draw < 0.55:
                    self._transfer(connection, op_id)
                elif draw < 0.9:
                    self._rotate(connection, op_id)
                else:
                    self._read_check(connection, op_id)
                if self.think_ms:
                    time.sleep(self.think_ms / 1000)
        finally:
            connection.close()

    def _acknowledge(self, kind: str, op_id: str, detail: tuple) -> None:
        now = time.monotonic()
        with self._lock:
            self.record.acknowledged.append(Acknowledged(kind, op_id, detail, now))
            self.last_acknowledged_at = now

    def _failed(self, op_id: str, error: BaseException) -> None:
        if isinstance(error, evedb.OperationalError) and "no evedb node answered" in str(error):
            self.record.unknown.append((op_id, str(error)[:200]))
        elif isinstance(error, evedb.IntegrityError):
            # Only a second run of the same transaction can collide on its own unique id.
            self.record.wrong_replies.append(f"{op_id}: ran twice? {type(error).__name__}: {error}")
        else:
            self.record.wrong_replies.append(f"{op_id}: unexpected {type(error).__name__}: {error}")
            # The transaction may still have run (the driver may have sent it before failing):
            # its outcome is unknown too, so the exactly-once check does not count it twice.
            self.record.unknown.append((op_id, str(error)[:200]))

    def _transfer(self, connection, op_id: str) -> None:
        source, target = self.generator.sample(range(ACCOUNTS), 2)
        amount = self.generator.randint(1, 9)
        try:
            with connection.transaction() as tx:
                tx.execute("UPDATE fault_account SET balance = balance - ? WHERE id = ?", (amount, source))
                tx.execute("UPDATE fault_account SET balance = balance + ? WHERE id = ?", (amount, target))
                tx.execute("INSERT INTO fault_transfer VALUES (?, ?, ?, ?)", (op_id, source, target, amount))
        except evedb.Error as error:
            self._failed(op_id, error)
            return
        self._acknowledge("transfer", op_id, (source, target, amount))

    def _rotate(self, connection, op_id: str) -> None:
        start = self.generator.randrange(RING_SIZE)
        cursor = connection.cursor()
        try:
            cursor.callproc("faults_cycle_rotate", (op_id, start))
            rows = cursor.fetchall()
        except evedb.Error as error:
            self._failed(op_id, error)
            return
        if len(rows) != 1 or len(rows[0]) != 5:
            self.record.wrong_replies.append(f"{op_id}: rotation reply {rows!r}")
            return
        seq, position, b, c, d = rows[0]
        self._acknowledge("cycle", op_id, (seq, position, start, b, c, d))

    def _read_check(self, connection, op_id: str) -> None:
        """Read-only: the total and the ring, as one client would see them (read path)."""
        try:
            total = connection.execute("SELECT sum(balance) FROM fault_account").fetchall()[0][0]
            pairs = connection.execute("SELECT k, next FROM fault_ring").fetchall()
        except evedb.Error as error:
            self._failed(op_id, error)
            return
        self.record.reads_checked += 1
        if total != ACCOUNTS * INITIAL_BALANCE:
            self.record.wrong_replies.append(f"{op_id}: a read saw the bank total {total}")
        problem = ring_problem(pairs)
        if problem:
            self.record.wrong_replies.append(f"{op_id}: a read saw a broken ring: {problem}")

    def acknowledged_after(self, moment: float) -> bool:
        return self.last_acknowledged_at > moment
