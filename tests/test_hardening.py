"""Every entry point fed bad input: a clear error for the offender, and another client,
connected at the same time, keeps getting answers.

Real `evedb serve` processes on loopback: a standalone node with an auth file and small
limits, a standalone TLS node, and a pair linked by mutual TLS.  Certificates come from
trustme (a throwaway CA per test module).
"""

from __future__ import annotations

import os
import socket
import struct

import pytest
import trustme
from click.testing import CliRunner

import evedb
from cli.main import main as cli
from evedb import codec
from evedb.client import node_status
from evedb.messages import Request
from evedb.runtime.auth import Authenticator, add_user, read_entries
from evedb.runtime.hardening import node_settings
from evedb.runtime.launch import Pair, free_port_pair
from evedb.runtime.tls import TLSFiles
from evedb.runtime.transport import PROTOCOL_VERSION, encode_frame, read_frame_blocking
from test_pair import wait_for

PASSWORD = "correct horse"
LIMITS = {
    "--max-connections": 6,
    "--max-inflight": 4,
    "--max-frame-bytes": 64 * 1024,
    "--max-statement-bytes": 4000,
    "--max-result-bytes": 300_000,
    "--max-output-buffer-bytes": 600_000,
}


def read_log(node: Pair) -> str:
    with open(os.path.join(node.log_dir, "primary.log")) as handle:
        return handle.read()


# --- nodes ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    directory = tmp_path_factory.mktemp("certs")

    def write(name: str, *blobs) -> str:
        path = str(directory / name)
        with open(path, "wb") as handle:
            for blob in blobs:
                handle.write(blob.bytes())
        return path

    ca, rogue = trustme.CA(), trustme.CA()
    served, forged = ca.issue_cert("127.0.0.1", "localhost"), rogue.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client.example")
    return {
        "ca": write("ca.pem", ca.cert_pem),
        "cert": write("node.pem", *served.cert_chain_pems),
        "key": write("node.key", served.private_key_pem),
        "rogue_ca": write("rogue-ca.pem", rogue.cert_pem),
        "rogue_cert": write("rogue.pem", *forged.cert_chain_pems),
        "rogue_key": write("rogue.key", forged.private_key_pem),
        # Signed by the nodes' CA, but for a client's name, not a node's host.
        "client_cert": write("client.pem", *client.cert_chain_pems),
        "client_key": write("client.key", client.private_key_pem),
    }


def started(node: Pair):
    node.start_all()
    try:
        node.wait_ready(60)
        yield node
    finally:
        node.stop()
    for name in node.processes:  # no connection task died on the bad input
        with open(os.path.join(node.log_dir, f"{name}.log")) as handle:
            log = handle.read()
        assert "Traceback" not in log and "never retrieved" not in log, log[-3000:]


@pytest.fixture(scope="module")
def auth_node(tmp_path_factory):
    """A standalone node with users alice (a password) and bob (a token), and small limits."""
    directory = tmp_path_factory.mktemp("auth-node")
    auth_file = str(directory / "users")
    add_user(auth_file, "alice", PASSWORD)
    add_user(auth_file, "bob", "token-7f3a")
    limits = tuple(str(part) for option, value in LIMITS.items() for part in (option, value))
    node = Pair(str(directory), free_port_pair(), workers=1, standalone=True, auth_file=auth_file,
                credentials=("alice", PASSWORD), extra_args=limits)
    yield from started(node)


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory, certificates):
    node = Pair(str(tmp_path_factory.mktemp("tls-node")), free_port_pair(), workers=1, standalone=True,
                tls=TLSFiles(certificates["cert"], certificates["key"], certificates["ca"]))
    yield from started(node)


class Witness:
    """A client connected before the bad input; `check` proves it still gets answers."""

    def __init__(self, dsn: str, **options):
        self.connection = evedb.connect(dsn, autocommit=True, timeout=20, **options)
        self.connection.execute("CREATE TABLE IF NOT EXISTS witness(k INTEGER PRIMARY KEY, n INTEGER)")
        self.connection.execute("INSERT OR IGNORE INTO witness VALUES (1, 0)")
        self.count = self.value()

    def value(self) -> int:
        return self.connection.execute("SELECT n FROM witness WHERE k = 1").fetchall()[0][0]

    def check(self) -> None:
        self.connection.execute("UPDATE witness SET n = n + 1 WHERE k = 1")
        self.count += 1
        assert self.value() == self.count

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def witness(auth_node):
    watcher = Witness(auth_node.dsn)
    yield watcher
    watcher.check()  # after the test's bad input too
    watcher.close()


def limit_counters(node: Pair) -> dict:
    return node_status(node.node_dsn("primary"))["limits"]


def raw_client(node: Pair, user: str | None = "alice", password: str = PASSWORD, rcvbuf: int | None = None):
    host, port = node.address("primary").rsplit(":", 1)
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((host, int(port)))
    hello = ["hello", PROTOCOL_VERSION, "client", "test"]
    if user is not None:
        hello.append({"user": user, "password": password})
    sock.sendall(encode_frame(hello))
    return sock, read_frame_blocking(sock, 1 << 20)


def read_or_closed(sock: socket.socket):
    try:
        return read_frame_blocking(sock, 1 << 22)
    except OSError:
        return None


# --- authentication ---------------------------------------------------------------------------


def test_wrong_or_missing_credentials_are_refused_and_nothing_runs(auth_node, witness):
    before = limit_counters(auth_node)["authentication_failures"]
    host_port = auth_node.address("primary")
    for dsn, reason in ((f"evedb://alice:wrong@{host_port}", "wrong user name or password"),
                        (f"evedb://mallory:{PASSWORD}@{host_port}", "wrong user name or password"),
                        (f"evedb://{host_port}", "requires authentication")):
        connection = evedb.connect(dsn, autocommit=True, timeout=5)
        with pytest.raises(evedb.OperationalError, match=reason):
            connection.execute("UPDATE witness SET n = 1000 WHERE k = 1")
    # A raw client that ignores the refusal and sends a write anyway: the node closed on it.
    sock, answer = raw_client(auth_node, password="wrong")
    assert answer[:2] == ["error", "AuthenticationFailed"]
    request = Request.statement("intruder", 1, "UPDATE witness SET n = 1000 WHERE k = 1")
    try:
        sock.sendall(encode_frame(["request", codec.request_to_plain(request)]))
    except OSError:
        pass
    assert read_or_closed(sock) is None
    sock.close()
    assert witness.value() == witness.count  # nothing the refused clients sent ran
    witness.check()
    # The token user and keyword credentials work; the failures were counted and logged.
    token_user = evedb.connect(f"evedb://{host_port}", user="bob", password="token-7f3a", autocommit=True, timeout=5)
    assert token_user.execute("SELECT n FROM witness").fetchall() == [(witness.count,)]
    token_user.close()
    assert limit_counters(auth_node)["authentication_failures"] >= before + 4
    assert "authentication failed for user 'mallory'" in read_log(auth_node)


def test_auth_cli_and_file_format(tmp_path):
    auth_file = str(tmp_path / "users")
    runner = CliRunner()
    result = runner.invoke(cli, ["auth", "add", auth_file, "carol", "--password-stdin"], input="pa:ss word\n")
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["auth", "add", auth_file, "dave", "--token"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().rsplit(" ", 1)[-1]
    text = open(auth_file).read()
    assert "pa:ss word" not in text and token not in text  # only salted hashes are stored
    assert oct(os.stat(auth_file).st_mode & 0o777) == "0o600"
    checker = Authenticator(read_entries(auth_file))
    assert checker.verify("carol", "pa:ss word") and checker.verify("dave", token)
    assert not checker.verify("carol", token) and not checker.verify("nobody", token)
    assert not checker.verify("carol", None) and not checker.verify(["carol"], "x")
    assert runner.invoke(cli, ["auth", "add", auth_file, "bad user"], input="x\n").exit_code != 0
    # A damaged file is refused at start with its line number.
    with open(auth_file, "a") as handle:
        handle.write("erin:scrypt:16384:8:1:zz:00\n")
    with pytest.raises(ValueError, match="line 4"):
        node_settings(auth_file=auth_file)
    assert runner.invoke(cli, ["auth", "remove", auth_file, "carol"]).exit_code != 0  # still damaged


# --- bad frames -------------------------------------------------------------------------------


def test_malformed_frames_and_unknown_types_get_errors(auth_node, witness):
    garbage, _ = raw_client(auth_node)
    garbage.sendall(b"\x00\x00\x00\x04\xc1\xc1\xc1\xc1")  # 0xc1 is never valid msgpack
    answer = read_frame_blocking(garbage, 1 << 20)
    assert answer[:2] == ["error", "InterfaceError"] and "undecodable" in answer[2]
    assert read_or_closed(garbage) is None
    garbage.close()

    chatty, _ = raw_client(auth_node)
    for frame, expected in ((["launch_missiles", 1], "unknown message type"),
                            (["request", ["not", "a", "request"]], "malformed request"),
                            (["request", ["c", "one", 0, [], None, []]], "request ids"),
                            (["status", "extra"], "unknown message type")):
        chatty.sendall(encode_frame(frame))
        answer = read_frame_blocking(chatty, 1 << 20)
        assert answer[0] == "error" and expected in answer[2], answer
    chatty.sendall(encode_frame(["status"]))  # the connection still works after each error
    assert read_frame_blocking(chatty, 1 << 20)[0] == "status"
    chatty.close()

    for hello in (["hello", 99, "client", "x"], ["hello", PROTOCOL_VERSION, "root", "x"], {"hello": 1},
                  ["hello", PROTOCOL_VERSION, "client", "x", {"user": 1}]):
        host, port = auth_node.address("primary").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(encode_frame(hello))
            answer = read_frame_blocking(sock, 1 << 20)
            assert answer[:2] == ["error", "InterfaceError"], answer
    witness.check()


def test_an_oversized_frame_gets_a_clear_error_and_the_connection_stays_usable(auth_node, witness):
    connection = evedb.connect(auth_node.dsn, autocommit=True, timeout=10)
    with pytest.raises(evedb.DataError, match="exceeds the limit of 65536"):
        connection.execute("SELECT length(?)", (b"x" * 100_000,))
    assert connection.execute("SELECT length(?)", (b"x" * 1000,)).fetchall() == [(1000,)]
    connection.close()
    huge, _ = raw_client(auth_node)
    huge.sendall(struct.pack(">I", 1 << 30))  # 1 GiB announced: refused from its header, connection closed
    answer = read_or_closed(huge)
    assert answer is None or (answer[:2] == ["error", "DataError"] and "exceeds the limit" in answer[2])
    assert read_or_closed(huge) is None
    huge.close()
    witness.check()


# --- SQL --------------------------------------------------------------------------------------


@pytest.mark.parametrize("sql, error, fragment", [
    ("SELEC nonsense", evedb.ProgrammingError, "syntax"),
    ("SELECT * FROM no_such_table", evedb.ProgrammingError, "no_such_table"),
    ("ATTACH DATABASE 'other.db' AS other", evedb.NotSupportedError, "ATTACH"),
    ("PRAGMA journal_mode=DELETE", evedb.ProgrammingError, "journal_mode"),
    ("SELECT load_extension('x')", evedb.NotSupportedError, "load_extension"),
])
def test_invalid_and_forbidden_sql_over_the_wire(auth_node, witness, sql, error, fragment):
    connection = evedb.connect(auth_node.dsn, autocommit=True, timeout=10)
    with pytest.raises(error, match=fragment):
        connection.execute(sql)
    assert connection.execute("SELECT 1").fetchall() == [(1,)]
    connection.close()
    witness.check()


def test_too_long_a_statement_is_refused_and_nothing_runs(auth_node, witness):
    connection = evedb.connect(auth_node.dsn, autocommit=True, timeout=10)
    padding = "/*" + "x" * 5000 + "*/"
    with pytest.raises(evedb.DataError, match="over the node's limit of 4000"):
        connection.execute(f"UPDATE witness SET n = 1000 WHERE k = 1 {padding}")
    assert witness.value() == witness.count  # not executed
    assert connection.execute("SELECT 1").fetchall() == [(1,)]
    connection.close()
    assert limit_counters(auth_node)["statements_refused"] >= 1
    witness.check()


def test_too_large_a_result_is_an_error_reply_and_the_connection_stays_usable(auth_node, witness):
    connection = evedb.connect(auth_node.dsn, autocommit=True, timeout=10)
    with pytest.raises(evedb.DataError, match="over the node's limit of 300000"):
        connection.execute("SELECT zeroblob(400000)")
    assert connection.execute("SELECT length(zeroblob(200000))").fetchall() == [(200_000,)]
    connection.close()
    assert limit_counters(auth_node)["results_refused"] >= 1
    witness.check()


# --- connections and flow ---------------------------------------------------------------------


def test_too_many_connections_get_a_clear_error_and_a_freed_slot_is_reused(auth_node, witness):
    opened = []
    try:
        with pytest.raises(evedb.OperationalError, match="TooManyConnections"):
            for _ in range(LIMITS["--max-connections"] + 1):  # the witness holds one slot already
                connection = evedb.connect(auth_node.dsn, autocommit=True, timeout=5)
                connection.execute("SELECT 1")
                opened.append(connection)
        assert len(opened) == LIMITS["--max-connections"] - 1
        witness.check()  # the connected clients go on
        opened.pop().close()

        def reconnects() -> bool:
            try:
                connection = evedb.connect(auth_node.dsn, autocommit=True, timeout=5)
                connection.execute("SELECT 1")
            except evedb.OperationalError:
                return False
            opened.append(connection)
            return True

        wait_for(reconnects, 10, "a freed connection slot")
    finally:
        for connection in opened:
            connection.close()
    assert "refusing clients" in read_log(auth_node)


def test_too_many_requests_in_flight_pause_reading_and_all_are_answered(auth_node, witness):
    # Writes: they wait for their batches (a cheap read may be answered as soon as it is read).
    witness.connection.execute("CREATE TABLE IF NOT EXISTS pipelined(k INTEGER PRIMARY KEY, v INTEGER)")
    pauses_before = limit_counters(auth_node)["inflight_pauses"]
    sock, _ = raw_client(auth_node)
    count = 40
    frames = b"".join(encode_frame(["request", codec.request_to_plain(
        Request.statement("pipeliner", number, "INSERT INTO pipelined VALUES (?, ?)", (number, number * 2)))])
        for number in range(1, count + 1))
    sock.sendall(frames)  # all at once, before reading any reply
    answers = {}
    for _ in range(count):
        reply = codec.reply_from_plain(read_frame_blocking(sock, 1 << 20)[1])
        answers[reply.request_id] = reply.results[0].rowcount
    sock.close()
    assert answers == {number: 1 for number in range(1, count + 1)}
    rows = witness.connection.execute("SELECT k, v FROM pipelined ORDER BY k").fetchall()
    assert rows == [(number, number * 2) for number in range(1, count + 1)]
    assert limit_counters(auth_node)["inflight_pauses"] > pauses_before
    witness.check()


def test_a_client_that_never_reads_is_disconnected_and_batching_goes_on(auth_node, witness):
    dropped_before = limit_counters(auth_node)["slow_clients_dropped"]
    stalled, _ = raw_client(auth_node, rcvbuf=4096)
    request_frames = [encode_frame(["request", codec.request_to_plain(
        Request.statement("staller", number, "SELECT zeroblob(250000)"))]) for number in range(1, 121)]
    try:
        for frame in request_frames:  # ~30 MB of replies asked for, none read
            stalled.sendall(frame)
            witness.check()  # writes keep committing while the stalled client's replies pile up
    except OSError:
        pass  # the node already dropped us
    wait_for(lambda: limit_counters(auth_node)["slow_clients_dropped"] > dropped_before, 20, "the stalled client dropped")
    witness.check()
    stalled.close()
    assert "bytes of replies unread" in read_log(auth_node)


# --- TLS --------------------------------------------------------------------------------------


def test_tls_mismatches_and_untrusted_certificates_are_clear_errors(tls_node, auth_node, certificates):
    tls_dsn = tls_node.dsn
    assert tls_dsn.startswith("evedb+tls://")
    tls_witness = Witness(tls_dsn)
    plain_witness = Witness(auth_node.dsn)
    failures_before = limit_counters(tls_node)["tls_failures"]
    address = tls_node.address("primary")

    plaintext = evedb.connect(f"evedb://{address}", autocommit=True, timeout=5)
    with pytest.raises(evedb.OperationalError, match="requires TLS"):
        plaintext.execute("SELECT 1")
    untrusted = evedb.connect(f"evedb+tls://{address}?ca={certificates['rogue_ca']}", autocommit=True, timeout=5)
    with pytest.raises(evedb.OperationalError, match="not trusted"):
        untrusted.execute("SELECT 1")
    forged_client = evedb.connect(tls_dsn, tls_cert=certificates["rogue_cert"], tls_key=certificates["rogue_key"],
                                  autocommit=True, timeout=5)
    with pytest.raises(evedb.OperationalError, match="TLS"):
        forged_client.execute("SELECT 1")  # a client certificate the node's CA did not sign
    tls_at_plain = evedb.connect(auth_node.dsn.replace("evedb://", "evedb+tls://") + f"?ca={certificates['ca']}",
                                 autocommit=True, timeout=5)
    with pytest.raises(evedb.OperationalError, match="is that node serving TLS"):
        tls_at_plain.execute("SELECT 1")

    tls_witness.check()
    plain_witness.check()
    tls_witness.close()
    plain_witness.close()
    wait_for(lambda: limit_counters(tls_node)["tls_failures"] >= failures_before + 3, 10, "the TLS failures counted")
    tls_log, plain_log = read_log(tls_node), read_log(auth_node)
    assert "connected without TLS, but this node requires TLS" in tls_log
    assert "TLS handshake with" in tls_log and "failed" in tls_log
    assert "started a TLS handshake, but this node serves plaintext" in plain_log


def test_a_pair_over_mutual_tls_with_authentication_replicates(tmp_path, certificates):
    auth_file = str(tmp_path / "users")
    add_user(auth_file, "alice", PASSWORD)
    pair = Pair(str(tmp_path / "pair"), free_port_pair(), workers=1, auth_file=auth_file,
                credentials=("alice", PASSWORD),
                tls=TLSFiles(certificates["cert"], certificates["key"], certificates["ca"]))
    for node in started(pair):
        connection = evedb.connect(node.dsn, autocommit=True, timeout=20)
        connection.execute("CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)")
        connection.cursor().executemany("INSERT INTO kv VALUES (?, ?)", [(i, str(i)) for i in range(20)])
        assert connection.execute("SELECT count(*) FROM kv").fetchall() == [(20,)]
        connection.close()

        def roots_equal() -> bool:
            primary, backup = node_status(node.node_dsn("primary")), node_status(node.node_dsn("backup"))
            return primary["state_root"] == backup["state_root"] and primary["committed_seq"] == backup["committed_seq"]

        wait_for(roots_equal, 20, "equal roots over the TLS peer link")
        status = node_status(node.node_dsn("primary"))
        assert status["tls"] and status["authentication"] and status["peer_state"] == "synced"
        # A TLS connection without a client certificate may not pose as the peer, even with the
        # right HMAC secret: with --tls-ca the peer link is mutual TLS.
        import ssl

        context = ssl.create_default_context(cafile=certificates["ca"])
        host, port = node.address("primary").rsplit(":", 1)
        with context.wrap_socket(socket.create_connection((host, int(port)), timeout=10), server_hostname=host) as sock:
            with open(node.secret_file, "rb") as handle:
                secret = handle.read().strip()
            sock.sendall(encode_frame(["hello", PROTOCOL_VERSION, "peer", "intruder", "eve"], secret))
            answer = read_frame_blocking(sock, 1 << 20, secret)
            assert answer[:2] == ["error", "AuthenticationFailed"] and "certificate" in answer[2]
        assert node_status(node.node_dsn("primary"))["peer_state"] == "synced"


def _tls_peer_hello(node: Pair, name: str, certificates, cert: str, key: str, secret: bytes | None):
    """A TLS connection with a client certificate that says it is the peer: the node's answer."""
    import ssl

    context = ssl.create_default_context(cafile=certificates["ca"])
    context.load_cert_chain(certificates[cert], certificates[key])
    host, port = node.address(name).rsplit(":", 1)
    with context.wrap_socket(socket.create_connection((host, int(port)), timeout=10), server_hostname=host) as sock:
        sock.sendall(encode_frame(["hello", PROTOCOL_VERSION, "peer", "intruder", "eve"], secret))
        return read_frame_blocking(sock, 1 << 20, secret)


def test_a_node_without_a_peer_refuses_every_peer_hello(tls_node, certificates):
    watcher = Witness(tls_node.dsn)
    with open(tls_node.secret_file, "rb") as handle:
        secret = handle.read().strip()
    # Even with the secret and a node certificate: a standalone node has no peer to link to.
    answer = _tls_peer_hello(tls_node, "primary", certificates, "cert", "key", secret)
    assert answer[:2] == ["error", "AuthenticationFailed"] and "without a peer" in answer[2]
    watcher.check()
    watcher.close()


class _PairWithoutSecret(Pair):
    """Peer authentication by mutual TLS alone (`--tls-ca`, no `--secret-file`)."""

    def command(self, name: str) -> list[str]:
        command = super().command(name)
        at = command.index("--secret-file")
        return command[:at] + command[at + 2:]


def test_a_client_certificate_from_the_nodes_ca_cannot_pose_as_the_peer(tmp_path, certificates):
    pair = _PairWithoutSecret(str(tmp_path / "pair"), free_port_pair(), workers=1,
                              tls=TLSFiles(certificates["cert"], certificates["key"], certificates["ca"]))
    for node in started(pair):
        wait_for(lambda: node_status(node.node_dsn("primary"))["peer_state"] == "synced", 30, "the pair linked")
        watcher = Witness(node.dsn)
        answer = _tls_peer_hello(node, "primary", certificates, "client_cert", "client_key", None)
        assert answer[:2] == ["error", "AuthenticationFailed"] and "does not name 127.0.0.1" in answer[2]
        watcher.check()
        watcher.close()
        assert node_status(node.node_dsn("primary"))["peer_state"] == "synced"
