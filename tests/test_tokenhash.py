"""The cell and row hashing in C (evedb/_tokenhash.c) against its definition in evedb/merkle.py.

The C code must give the very same row hashes and page deltas, since replicas built with and
without it must agree on every token; and it reads changesets, so a damaged one must raise,
never crash the process.
"""

from __future__ import annotations

import pickle
from dataclasses import FrozenInstanceError

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evedb import codec, merkle, storage
from evedb.engine import ExecutionEngine
from evedb.executor import Worker
from evedb.messages import Batch, Column, ErrorInfo, Reply, Request, StatementResult

native = pytest.importorskip("evedb._tokenhash", reason="the C row hashing was not built here")

sqlite_integers = st.integers(-(2**63), 2**63 - 1)
# Around every boundary of msgpack's integer forms.
boundary_integers = st.sampled_from([
    0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1,
    -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63),
])
sized_text = st.sampled_from([0, 31, 32, 255, 256, 65535, 65536]).map(lambda n: "é" * (n // 2) + "x" * (n % 2))
sqlite_values = st.one_of(
    st.none(),
    sqlite_integers,
    boundary_integers,
    st.floats(allow_nan=False),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
    sized_text,
    st.binary(max_size=300),
    st.sampled_from([b"", b"\x00" * 256, b"b" * 65536]),
)


def test_the_c_row_hashing_is_used_where_it_was_built():
    assert merkle.row_hash_kind() == "c"
    assert merkle.row_hash is not merkle.row_hash_python


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40), st.lists(sqlite_values, min_size=1, max_size=3),
       st.lists(sqlite_values, max_size=20))
def test_row_hash_is_byte_for_byte_the_definition(table, key, values):
    row = tuple(values)
    assert merkle.row_hash(table, tuple(key), row) == merkle.row_hash_python(table, tuple(key), row)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=10), st.integers(1, 6).flatmap(
    lambda width: st.tuples(st.lists(st.integers(0, width - 1), min_size=1, max_size=width, unique=True),
                            st.lists(st.lists(sqlite_values, min_size=width, max_size=width).map(tuple), max_size=30))))
def test_a_tables_deltas_are_those_of_its_rows_one_by_one(table, shape):
    key_indexes, rows = shape
    key_indexes = tuple(sorted(key_indexes))
    assert native.table_deltas(table, key_indexes, iter(rows)) == merkle.table_deltas_python(table, key_indexes, rows)


def test_table_deltas_refuses_rows_it_cannot_hash():
    with pytest.raises(ValueError, match="past the row's end"):
        native.table_deltas("t", (2,), [(1, 2)])
    with pytest.raises(TypeError, match="tuples"):
        native.table_deltas("t", (0,), [[1, 2]])
    with pytest.raises(TypeError):
        native.table_deltas("t", (0,), [(1, {})])

    def failing():
        yield (1, 2)
        raise RuntimeError("the scan failed")

    with pytest.raises(RuntimeError, match="the scan failed"):
        native.table_deltas("t", (0,), failing())


# What a reply can hold: SQLite values, and whatever else a procedure returned.
procedure_values = st.one_of(sqlite_values, st.booleans(), st.integers(2**63, 2**64 - 1),
                             st.lists(sqlite_values, max_size=3), st.tuples(sqlite_values))
columns = st.lists(st.builds(Column, st.text(max_size=8), st.one_of(st.none(), st.sampled_from(["INTEGER", "TEXT"]))),
                   max_size=3)
statement_results = st.builds(
    StatementResult, columns.map(tuple),
    st.lists(st.lists(procedure_values, max_size=3).map(tuple), max_size=4).map(tuple),
    st.integers(-1, 10**6), st.one_of(st.none(), sqlite_integers),
)
replies = st.builds(
    Reply, st.text(max_size=10), st.integers(0, 2**63 - 1), st.lists(statement_results, max_size=3).map(tuple),
    st.one_of(st.none(), st.builds(ErrorInfo, st.text(max_size=10), st.text(max_size=30))),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(replies, max_size=6))
def test_the_replies_bytes_are_byte_for_byte_the_definition(batch_replies):
    assert native.encode_replies(batch_replies) == codec.encode_replies_python(batch_replies)
    assert codec.encode_replies(batch_replies) == codec.encode_replies_python(batch_replies)


def test_a_reply_value_the_c_encoder_does_not_write_is_encoded_in_python():
    odd = [Reply("c", 1, (StatementResult((), (({"a": 1},),), 1, None),))]
    with pytest.raises(native.NotEncodable):
        native.encode_replies(odd)
    assert codec.encode_replies(odd) == codec.encode_replies_python(odd)  # msgpack writes a map
    too_big = [Reply("c", 1, (StatementResult((), ((2**64,),), 1, None),))]
    with pytest.raises(native.NotEncodable):
        native.encode_replies(too_big)
    with pytest.raises(OverflowError):  # what msgpack says, as before the C encoder
        codec.encode_replies(too_big)


def test_row_hash_refuses_what_sqlite_cannot_hold():
    with pytest.raises(OverflowError):
        merkle.row_hash("t", (1,), (2**64,))
    with pytest.raises(TypeError):
        merkle.row_hash("t", (1,), ([1],))
    with pytest.raises(TypeError):
        merkle.row_hash("t", ([1],), (1,))


TABLES = (
    "CREATE TABLE rowid_t(id INTEGER PRIMARY KEY, t TEXT, r REAL, b BLOB, n)",
    "CREATE TABLE text_key(k TEXT PRIMARY KEY, v INTEGER, w)",
    # The key's declared order (y, x) differs from column order: pages follow column order.
    "CREATE TABLE pair_key(x INTEGER, y TEXT, z, PRIMARY KEY (y, x)) WITHOUT ROWID",
    "CREATE TABLE kv(k INTEGER PRIMARY KEY, v)",
)
small_keys = st.integers(-200, 200)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("insert_rowid"), small_keys, sqlite_values, sqlite_values, sqlite_values, sqlite_values),
        st.tuples(st.just("update_some"), small_keys, sqlite_values),
        st.tuples(st.just("update_all"), small_keys, sqlite_values, sqlite_values, sqlite_values, sqlite_values),
        st.tuples(st.just("move_key"), small_keys, small_keys),
        st.tuples(st.just("delete"), small_keys),
        st.tuples(st.just("insert_text"), st.text(max_size=5), sqlite_values, sqlite_values),
        st.tuples(st.just("update_text"), st.text(max_size=5), sqlite_values),
        st.tuples(st.just("insert_pair"), small_keys, st.text(max_size=3), sqlite_values),
        st.tuples(st.just("update_pair"), small_keys, sqlite_values),
        st.tuples(st.just("kv"), small_keys, sqlite_values),
    ),
    max_size=40,
)


def _apply(connection, operation) -> None:
    kind, *args = operation
    statements = {
        "insert_rowid": "INSERT OR REPLACE INTO rowid_t VALUES (?, ?, ?, ?, ?)",
        "update_some": "UPDATE rowid_t SET r = ? WHERE id = ?",
        "update_all": "UPDATE rowid_t SET t = ?, r = ?, b = ?, n = ? WHERE id = ?",
        "move_key": "UPDATE OR REPLACE rowid_t SET id = ? WHERE id = ?",
        "delete": "DELETE FROM rowid_t WHERE id = ?",
        "insert_text": "INSERT OR REPLACE INTO text_key VALUES (?, ?, ?)",
        "update_text": "UPDATE text_key SET w = ? WHERE k = ?",
        "insert_pair": "INSERT OR REPLACE INTO pair_key VALUES (?, ?, ?)",
        "update_pair": "UPDATE pair_key SET z = ? WHERE x = ?",
        "kv": "INSERT OR REPLACE INTO kv VALUES (?, ?)",
    }
    if kind in ("update_some", "update_text", "update_pair"):
        args = [args[1], args[0]]
    elif kind == "update_all":
        args = [*args[1:], args[0]]
    elif kind == "move_key":
        args = [args[1], args[0]]
    connection.execute(statements[kind], args)


@pytest.fixture(scope="module")
def seeded_database(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("rowhash") / "seed.db")
    connection = storage.open_connection(path)
    storage.ensure_internal_tables(connection)
    for create in TABLES:
        connection.execute(create)
    with connection:
        for i in range(-100, 100, 3):
            connection.execute("INSERT INTO rowid_t VALUES (?, ?, ?, ?, ?)", (i, f"t{i}", i / 3, bytes([i % 256]), None))
            connection.execute("INSERT INTO kv VALUES (?, ?)", (i, f"v{i}"))
            connection.execute("INSERT INTO pair_key VALUES (?, ?, ?)", (i, f"{i % 4}", i * 1.5))
            connection.execute("INSERT INTO text_key VALUES (?, ?, ?)", (f"k{i}", i, None))
    connection.close()
    with open(path, "rb") as seeded:
        return seeded.read()


def _deltas_of(worker, change, end="ROLLBACK"):
    """Runs change(connection) in one transaction of `worker` with a session attached, and
    returns its changeset's page deltas computed in C and in Python, and the changeset."""
    connection = worker.connection
    with worker.authorizer.internal():
        connection.execute("BEGIN")
        session = apsw.Session(connection, "main")
        session.attach()
        change(connection)
        changeset = session.changeset()
        session.close()
        result = worker.page_deltas(changeset), worker.page_deltas_python(changeset), changeset
        connection.execute(end)
    return result


def _deltas_both_ways(directory, seeded_database, ops):
    """Runs `ops` in one transaction of a real Worker and returns the changeset's page deltas
    computed in C and in Python, and the changeset."""
    path = directory / "changes.db"
    for leftover in (path, directory / "changes.db-wal", directory / "changes.db-shm"):
        leftover.unlink(missing_ok=True)
    path.write_bytes(seeded_database)
    worker = Worker(str(path), storage.StorageOptions())

    def change(connection):
        for operation in ops:
            try:
                _apply(connection, operation)
            except apsw.ConstraintError:
                pass

    try:
        return _deltas_of(worker, change)
    finally:
        worker.close()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_changeset_deltas_equal_the_python_deltas(tmp_path, seeded_database, ops):
    in_c, in_python, _ = _deltas_both_ways(tmp_path, seeded_database, ops)
    assert in_c == in_python


def test_every_kind_of_change_is_covered(tmp_path, seeded_database):
    ops = [("insert_rowid", 500, "a", 1.5, b"b", None), ("update_some", -100, 2.0),
           ("update_all", -97, "t", 0.5, b"", 7), ("move_key", -94, 900), ("delete", -91),
           ("insert_text", "new", 1, 2), ("update_text", "k-100", "w"), ("insert_pair", 1000, "q", 1),
           ("update_pair", -100, "z"), ("kv", -100, "changed"), ("kv", 5000, "inserted")]
    in_c, in_python, changeset = _deltas_both_ways(tmp_path, seeded_database, ops)
    assert in_c == in_python
    tables = {table for table, _ in in_c}
    assert tables == {"rowid_t", "text_key", "pair_key", "kv"}
    # UPDATEs that left columns alone (rowid_t's r, text_key's w) are in the changeset, and
    # were hashed from it: their changes lack the other columns.
    partial = {change.name for change in apsw.Changeset.iter(changeset)
               if change.op == "UPDATE" and apsw.no_change in change.old}
    assert partial == {"rowid_t", "text_key"}
    assert any(page % 2 for table, page in in_c if table == "pair_key")  # a hash page
    assert any(page < 0 for table, page in in_c if table == "rowid_t")  # negative keys floor


@pytest.fixture(scope="module")
def real_changeset(tmp_path_factory) -> bytes:
    connection = apsw.Connection(str(tmp_path_factory.mktemp("changeset") / "t.db"))
    connection.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, w REAL, b BLOB)")
    connection.execute("CREATE TABLE u(a TEXT, c INTEGER, PRIMARY KEY (a, c)) WITHOUT ROWID")
    connection.execute("INSERT INTO t VALUES (1, 'a', 1.0, x'00'), (2, 'b', 2.0, NULL)")
    session = apsw.Session(connection, "main")
    session.attach()
    connection.execute("UPDATE t SET v = 'c' WHERE id = 1; INSERT INTO t VALUES (3, 'xyz', 3.5, x'0102');"
                       "DELETE FROM t WHERE id = 2; INSERT INTO u VALUES ('k', -5), ('l', 70000)")
    return session.changeset()


def test_every_truncation_of_a_real_changeset_raises_or_reads_a_prefix(real_changeset):
    changeset = real_changeset
    deltas = native.changeset_deltas(changeset)
    assert deltas == Worker.page_deltas_python(changeset)
    assert len(deltas) == 3  # t's page 0, u's two hash pages
    for cut in range(len(changeset)):
        try:
            native.changeset_deltas(changeset[:cut])
        except ValueError as error:
            assert "malformed changeset" in str(error)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4), st.binary(max_size=40))
def test_a_damaged_changeset_raises_and_never_crashes(real_changeset, damage, garbage):
    changeset = bytearray(real_changeset)
    for position, value in damage:
        changeset[position % len(changeset)] = value
    for candidate in (bytes(changeset), bytes(changeset) + garbage, garbage):
        try:
            native.changeset_deltas(candidate)
        except UnicodeDecodeError:
            pass  # a damaged table name or text value
        except ValueError as error:
            assert "malformed changeset" in str(error) or "absent" in str(error)


def test_an_engine_reaches_the_same_root_with_and_without_the_c_code(tmp_path, monkeypatch):
    requests = (
        Request.statement("a", 1, "CREATE TABLE acct(id INTEGER PRIMARY KEY, owner TEXT, balance REAL, note BLOB)"),
        Request.statement("a", 2, "CREATE TABLE tag(name TEXT PRIMARY KEY, uses INTEGER)"),
    )
    writes = tuple(
        Request.statement("b", i, sql, params)
        for i, (sql, params) in enumerate([
            ("INSERT INTO acct VALUES (?, ?, ?, ?)", (n, f"owner{n}", n * 2.5, bytes([n]))) for n in range(1, 200)
        ] + [
            ("UPDATE acct SET balance = balance + 1 WHERE id = ?", (n,)) for n in range(1, 200, 7)
        ] + [
            ("INSERT INTO tag VALUES (?, ?)", (f"t{n}", n)) for n in range(50)
        ] + [
            ("DELETE FROM acct WHERE id = ?", (n,)) for n in range(3, 200, 11)
        ], start=1)
    )
    roots = {}
    for kind in ("c", "python"):
        if kind == "python":
            monkeypatch.setattr(merkle, "native", None)
            monkeypatch.setattr(merkle, "row_hash", merkle.row_hash_python)
            monkeypatch.setattr(merkle, "table_deltas", merkle.table_deltas_python)
            monkeypatch.setattr(codec, "_native_encode", None)
        path = str(tmp_path / f"{kind}.db")
        engine = ExecutionEngine(path, workers=1)
        try:
            engine.execute(Batch(1, 0, 1_700_000_000_000, 1, requests), commit=True)
            outcome = engine.execute(Batch(2, 0, 1_700_000_000_000, 1, writes), commit=True)
            assert all(reply.ok for reply in outcome.replies)
            incremental = engine.state_root()
            engine.full_build()
            roots[kind] = (incremental, engine.state_root(), outcome.token)
        finally:
            engine.close()
    assert roots["c"] == roots["python"]
    assert roots["c"][0] == roots["c"][1]


def _worker_on(path: str, *statements) -> Worker:
    """A Worker over a new database file set up by `statements`."""
    setup = storage.open_connection(path)
    storage.ensure_internal_tables(setup)
    for statement in statements:
        setup.execute(statement)
    setup.close()
    return Worker(path, storage.StorageOptions())


def test_an_update_after_a_column_was_added_is_hashed_alike(tmp_path):
    worker = _worker_on(str(tmp_path / "alter.db"), "CREATE TABLE t(id INTEGER PRIMARY KEY, a, b)",
                        "INSERT INTO t VALUES (1, 'x', 'y'), (2, 'z', 'w')")
    try:
        def both_ways(statement):
            in_c, in_python, _ = _deltas_of(worker, lambda connection: connection.execute(statement), "COMMIT")
            return in_c, in_python

        in_c, in_python = both_ways("UPDATE t SET a = 'changed' WHERE id = 1")
        assert in_c == in_python and in_c
        with worker.authorizer.internal():
            worker.connection.execute("ALTER TABLE t ADD COLUMN c DEFAULT 5")
        in_c, in_python = both_ways("UPDATE t SET c = 6 WHERE id = 2")  # the row now has 4 columns
        assert in_c == in_python and in_c
        # The delta is that of the whole row before and after: the unchanged cells cancel.
        expected = (merkle.row_hash("t", (2,), (2, "z", "w", 6)) - merkle.row_hash("t", (2,), (2, "z", "w", 5)))
        assert in_c == {("t", 0): expected % merkle.HASH_MODULUS}
    finally:
        worker.close()


def test_an_update_record_that_changes_its_key_is_refused():
    # SQLite records a change of key as a DELETE and an INSERT, except between keys it finds
    # equal but stores differently, which evedb refuses at CREATE TABLE (test_storage): an
    # UPDATE record that claims one is refused, not hashed under the wrong key.
    connection = apsw.Connection(":memory:")
    connection.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    connection.execute("INSERT INTO t VALUES (1, 'a')")
    session = apsw.Session(connection, "main")
    session.attach()
    connection.execute("UPDATE t SET v = 'b' WHERE id = 1")
    changeset = session.changeset()
    assert changeset.endswith(b"\x00\x03\x01b")  # new record: key absent (type 0), v = 'b'
    assert native.changeset_deltas(changeset) == Worker.page_deltas_python(changeset)
    moved = changeset[:-4] + b"\x01" + (2).to_bytes(8, "big") + b"\x03\x01b"  # key 2, well formed
    with pytest.raises(ValueError, match="malformed changeset: an UPDATE without its key, or changing it"):
        native.changeset_deltas(moved)


@settings(max_examples=200, deadline=None)
@given(st.lists(replies, max_size=5), st.data())
def test_replies_that_kept_their_bytes_hash_and_frame_as_if_encoded_afresh(batch_replies, data):
    # Some replies arrive from a worker as bytes (and keep them), others were made here.
    def kept(reply):
        encoded = codec.pack(codec.reply_to_plain(reply))
        return data.draw(st.sampled_from([
            reply,
            codec.reply_from_bytes(encoded),
            codec.EncodedReply(reply.client_id, reply.request_id, encoded),
            codec.with_encoding(reply),
        ]))

    mixed = [kept(reply) for reply in batch_replies]
    assert codec.encode_replies(mixed) == codec.encode_replies_python(batch_replies)
    for reply in mixed:
        assert codec.reply_message(reply) == codec.pack(["reply", codec.reply_to_plain(reply)])


def test_a_decoded_reply_equals_the_original_and_keeps_its_bytes():
    reply = Reply("c", 3, (StatementResult((Column("a", "INTEGER"),), ((1,), (None,)), 2, None),))
    decoded = codec.reply_from_bytes(codec.encode_reply(reply))
    assert decoded == reply  # the kept bytes are not part of a reply's equality
    assert decoded.encoded == codec.pack(codec.reply_to_plain(reply))
    assert decoded.results[0].rows == ((1,), (None,))


def test_a_reply_kept_as_bytes_is_decoded_only_when_read_and_is_equal_to_the_original():
    reply = Reply("c", 3, (StatementResult((Column("a", "INTEGER"),), ((1,), (None,)), 2, None),))
    kept = codec.EncodedReply("c", 3, codec.encode_reply(reply))
    assert kept == reply and reply == kept and hash(kept) == hash(reply) and kept.ok
    assert kept.results[0].rows == ((1,), (None,)) and kept.error is None
    assert repr(kept) == "Encoded" + repr(reply)
    assert pickle.loads(pickle.dumps(kept)) == reply
    assert codec.reply_message(kept) == codec.reply_message(reply)
    failed = Reply("c", 4, (), ErrorInfo("ProgrammingError", "no such table: t"))
    assert codec.EncodedReply("c", 4, codec.encode_reply(failed)) == failed
    assert codec.EncodedReply("c", 4, codec.encode_reply(failed)) != reply
    # Nothing is decoded before a field is read: bad bytes fail there, not when kept.
    damaged = codec.EncodedReply("c", 5, b"\xc1")
    assert (damaged.client_id, damaged.request_id, damaged.encoded) == ("c", 5, b"\xc1")
    with pytest.raises(codec.CodecError):
        damaged.results
    with pytest.raises(FrozenInstanceError):
        kept.request_id = 9


def test_a_shares_replies_carry_their_canonical_bytes(tmp_path):
    path = str(tmp_path / "db.sqlite")
    setup = storage.open_connection(path)
    storage.ensure_internal_tables(setup)
    setup.close()
    worker = Worker(path, storage.StorageOptions())
    try:
        share = worker.run_share(1, 1_700_000_000_000, 7, [
            (0, Request.statement("a", 1, "CREATE TABLE t(k INTEGER PRIMARY KEY, v)")),
            (1, Request.statement("b", 1, "INSERT INTO t VALUES (1, 'x'), (2, NULL)")),
            (2, Request.statement("c", 1, "SELECT k, v FROM t ORDER BY k")),
            (3, Request.statement("d", 1, "SELECT nothing FROM nowhere")),
        ], True)
    finally:
        worker.close()
    assert [reply.results[-1].rows for _, reply in share.replies[2:3]] == [((1, "x"), (2, None))]
    assert share.replies[3][1].error is not None
    for _, reply in share.replies:
        assert reply.encoded == codec.pack(codec.reply_to_plain(reply))


def test_nesting_msgpack_refuses_is_refused_alike_and_never_overflows_the_stack():
    def reply_holding(value):
        return [Reply("c", 1, (StatementResult((), ((value,),), 1, None),))]

    def nested(depth):
        value = 1
        for _ in range(depth):
            value = [value]
        return value

    for depth in (10, 255, 256, 257, 1000):  # 257 and more: left to msgpack, which still writes them
        assert codec.encode_replies(reply_holding(nested(depth))) == codec.encode_replies_python(
            reply_holding(nested(depth)))
    holds_itself: list = []
    holds_itself.append(holds_itself)
    for deep in (nested(5000), holds_itself):
        with pytest.raises(ValueError):
            codec.encode_replies_python(reply_holding(deep))
        with pytest.raises(ValueError):
            codec.encode_replies(reply_holding(deep))


def test_text_that_is_not_utf8_is_refused_as_the_python_path_refuses_it(tmp_path, seeded_database):
    path = tmp_path / "changes.db"
    path.write_bytes(seeded_database)
    worker = Worker(str(path), storage.StorageOptions())
    try:
        with worker.authorizer.internal():
            worker.connection.execute("BEGIN")
            session = apsw.Session(worker.connection, "main")
            session.attach()
            worker.connection.execute("INSERT INTO kv VALUES (9999, CAST(x'ff41' AS TEXT))")
            changeset = session.changeset()
            session.close()
            with pytest.raises(UnicodeDecodeError):
                worker.page_deltas_python(changeset)
            with pytest.raises(UnicodeDecodeError):
                worker.page_deltas(changeset)
            worker.connection.execute("ROLLBACK")
    finally:
        worker.close()


def test_minus_zero_hashes_as_zero_because_sqlite_records_no_change_between_them(tmp_path):
    worker = _worker_on(str(tmp_path / "zero.db"), "CREATE TABLE t(id INTEGER PRIMARY KEY, v, k REAL)",
                        "INSERT INTO t VALUES (1, 0.0, 2.5)")
    try:
        in_c, in_python, changeset = _deltas_of(worker, lambda c: c.execute("UPDATE t SET v = -0.0"), "COMMIT")
        assert in_c == in_python == {} and not changeset  # no change, as SQLite sees it ...
        stored = worker.connection.execute("SELECT v FROM t").fetchall()[0][0]
        assert str(stored) == "-0.0"  # ... though -0.0 is what the row now holds
    finally:
        worker.close()
    # ... so a full build must hash the row as before.
    assert merkle.row_hash("t", (1,), (1, -0.0, 2.5)) == merkle.row_hash("t", (1,), (1, 0.0, 2.5))
    assert merkle.row_hash_python("t", (1,), (1, -0.0, 2.5)) == merkle.row_hash("t", (1,), (1, 0.0, 2.5))
    assert merkle.page_of((-0.0, "a")) == merkle.page_of((0.0, "a"))


def test_a_changeset_never_carries_a_nan_and_one_that_does_is_malformed():
    import struct

    connection = apsw.Connection(":memory:")
    connection.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v REAL)")
    session = apsw.Session(connection, "main")
    session.attach()
    connection.execute("INSERT INTO t VALUES (1, 1.5)")
    changeset = session.changeset()
    assert changeset.endswith(struct.pack(">d", 1.5))  # the REAL's 8 bytes end the changeset
    assert native.changeset_deltas(changeset)
    with pytest.raises(ValueError, match="malformed changeset: a REAL is not a number"):
        native.changeset_deltas(changeset[:-8] + struct.pack(">d", float("nan")))


def test_configure_refuses_more_hash_buckets_than_page_numbers_hold():
    import xxhash._xxhash

    with pytest.raises(ValueError, match="hash buckets"):
        native.configure(xxhash._xxhash.__file__, merkle.ROWS_PER_PAGE, 2**64 - 1)
    assert native.changeset_deltas(b"") == {}  # the configuration in force is untouched
