"""Fuzzing every decoder a stranger can reach: the codec, the hello, and a live node's port.

- codec: random plain values and mutated encodings of every message type; a decoder either
  returns a message or raises CodecError, nothing else (and never hangs: hypothesis would
  report the example that did);
- hello: random hello-like frames; `parse_hello` returns a Hello or raises FrameError;
- a live standalone node: random bytes, random hello frames, truncated frames and huge length
  prefixes at its port.  The node must answer or close every such connection, keep serving a
  well-behaved client, and end with as many open sockets and file descriptors as it began
  with (no leak).
"""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evedb
from evedb import codec, messages
from evedb.client import node_status
from evedb.runtime.launch import Pair, free_port_pair
from evedb.runtime.transport import PROTOCOL_VERSION, FrameError, Hello, encode_frame, parse_hello

# --- plain values, as msgpack would decode them -------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True), st.text(max_size=20), st.binary(max_size=20),
)
plain_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=6),
                               st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-1000, 1000)), children, max_size=4)),
    max_leaves=30,
)


def _sample_messages():
    request = messages.Request.script("c1", 7, [messages.Statement("UPDATE t SET v = ? WHERE k = ?", (1, 2)),
                                                messages.Statement("SELECT :a", {"a": b"x"})])
    call = messages.Request.call("c2", 1, "transfer", (1, 2.5, "x", None))
    batch = messages.Batch(3, 1, 1_700_000_000_000, 42, (request, call))
    reply = messages.Reply("c1", 7, (messages.StatementResult((messages.Column("v", "INT"),), ((1,), (None,)), 1, 5),),
                           None)
    failed = messages.Reply("c1", 8, (), messages.ErrorInfo("ProgrammingError", "no such table"))
    peers = [
        messages.Hello(1, "n1", "primary", 3),
        messages.Execute(1, batch, 0, False),
        messages.Apply(1, batch, 0, (b"cs",), b"r" * 16, b"t" * 32, b"p" * 16, False),
        messages.TokenReport(1, 3, 0, b"t" * 32),
        messages.Commit(1, 3),
        messages.Heartbeat(1, "primary", 3, True),
        messages.SyncRequest(1, 2),
        messages.CatchUp(1, ((batch, b"t" * 32),), 3),
        messages.CaughtUp(1, 3),
        messages.NeedState(1, 3),
        messages.StateRequest(1, 3, b"s" * 16, (("t", ((0, b"h" * 16),)),)),
        messages.StateData(1, 3, (("table", "t", "t", "CREATE TABLE t(k INTEGER PRIMARY KEY)"),),
                           (("t", 0, ((1, "a"),)),), True, b"r" * 16),
    ]
    encoded = [
        (codec.request_from_plain, codec.request_to_plain(request)),
        (codec.request_from_plain, codec.request_to_plain(call)),
        (codec.batch_from_plain, codec.batch_to_plain(batch)),
        (codec.reply_from_plain, codec.reply_to_plain(reply)),
        (codec.reply_from_plain, codec.reply_to_plain(failed)),
    ]
    encoded += [(codec.peer_from_plain, codec.peer_to_plain(message)) for message in peers]
    return [(decoder, codec.pack(plain)) for decoder, plain in encoded]


SAMPLES = _sample_messages()
DECODERS = (codec.request_from_plain, codec.reply_from_plain, codec.batch_from_plain, codec.peer_from_plain)


def test_the_samples_round_trip():
    # The mutations below start from valid encodings: make sure they are valid.
    for decoder, data in SAMPLES:
        decoder(codec.unpack(data))


@settings(max_examples=300, deadline=None)
@given(plain=plain_values)
def test_decoders_accept_or_raise_codec_error_on_any_plain_value(plain):
    for decoder in DECODERS:
        try:
            decoder(plain)
        except codec.CodecError:
            pass


@st.composite
def mutated_encodings(draw):
    decoder, data = draw(st.sampled_from(SAMPLES))
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if operation == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif operation == "delete" and data:
            del data[position:position + draw(st.integers(1, 8))]
        elif operation == "truncate":
            del data[position:]
    return decoder, bytes(data)


@settings(max_examples=400, deadline=None)
@given(sample=mutated_encodings())
def test_mutated_encodings_decode_or_raise_codec_error(sample):
    decoder, data = sample
    try:
        decoder(codec.unpack(data))
    except codec.CodecError:
        pass


def test_deeply_nested_values_raise_codec_error_not_recursion_error():
    nested = []
    for _ in range(5000):
        nested = [nested]
    for decoder in DECODERS:
        with pytest.raises(codec.CodecError):
            decoder(["Heartbeat", nested, "x", 1, True] if decoder is codec.peer_from_plain else nested)
    with pytest.raises(codec.CodecError):
        codec.unpack(b"\x91" * 100_000)  # msgpack arrays nested 100,000 deep


# --- the hello ------------------------------------------------------------------------------

hello_like = st.tuples(
    st.sampled_from(["hello", "helo", ""]),
    st.one_of(st.just(PROTOCOL_VERSION), st.integers(-3, 3), st.booleans(), st.text(max_size=3)),
    st.one_of(st.sampled_from(["client", "admin", "peer", "root"]), plain_values),
    st.one_of(st.text(max_size=300), plain_values),
).flatmap(lambda head: st.one_of(
    st.just(list(head)),
    st.tuples(st.one_of(st.sampled_from(["eve", "passive"]),
                        st.fixed_dictionaries({"user": st.text(max_size=10), "password": st.text(max_size=10)}),
                        plain_values)).map(lambda tail: list(head) + list(tail)),
    plain_values,
))


@settings(max_examples=200, deadline=None)
@given(frame=hello_like)
def test_parse_hello_returns_a_hello_or_raises_frame_error(frame):
    try:
        hello = parse_hello(frame, ("eve", "passive"))
    except FrameError:
        return
    assert isinstance(hello, Hello) and hello.kind in ("client", "admin", "peer")


# --- a live node's port ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    started = Pair(str(tmp_path_factory.mktemp("fuzz")), free_port_pair(), workers=1, standalone=True,
                   extra_args=("--max-frame-bytes", str(1 << 20)))
    started.start_all()
    try:
        started.wait_ready(60)
        yield started
    finally:
        started.stop()


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def send_and_wait_for_close(address: str, data: bytes) -> None:
    """Send `data`, end our side, and read until the node closes: it must, within the timeout."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return  # the node already closed on us: fine
        try:
            while sock.recv(1 << 16):
                pass
        except ConnectionResetError:
            pass
        except socket.timeout:
            raise AssertionError(f"the node neither answered nor closed after {data[:40]!r}...") from None


port_inputs = st.one_of(
    st.binary(max_size=200),
    hello_like.map(lambda frame: encode_frame(frame)),
    st.tuples(hello_like, st.integers(1, 40)).map(lambda pair: encode_frame(pair[0])[: pair[1]]),
    st.integers(1 << 20, (1 << 32) - 1).map(lambda length: struct.pack(">I", length) + b"\x00" * 16),
    st.tuples(plain_values, st.integers(0, 3)).map(
        lambda pair: encode_frame(["hello", PROTOCOL_VERSION, "client", "fuzz"]) + encode_frame(pair[0])[pair[1]:]),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=port_inputs)
def test_random_input_at_the_port_is_answered_or_closed(node, data):
    send_and_wait_for_close(node.address("primary"), data)


def test_after_the_fuzzing_the_node_serves_and_has_leaked_nothing(node):
    address = node.address("primary")
    pid = node.processes["primary"].pid
    connection = evedb.connect(node.dsn, autocommit=True, timeout=20)
    connection.execute("CREATE TABLE IF NOT EXISTS kv(k INTEGER PRIMARY KEY, v)")
    baseline_descriptors = open_descriptors(pid)
    baseline = node_status(address)["connections"]
    for data in (os.urandom(100), struct.pack(">I", 0xFFFFFFFF), encode_frame(["hello", PROTOCOL_VERSION, "client", "x"])[:7],
                 encode_frame(["hello", PROTOCOL_VERSION, "client", "x"]) + b"\x00\x00\x00\x05\xc1\xc1"):
        for _ in range(10):
            send_and_wait_for_close(address, data)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = node_status(address)
        if status["connections"] == baseline and open_descriptors(pid) <= baseline_descriptors:
            break
        time.sleep(0.05)
    assert status["connections"] == baseline
    assert open_descriptors(pid) <= baseline_descriptors
    assert status["limits"]["malformed_frames"] > 0  # the node did see (and refuse) bad frames
    with open(os.path.join(node.log_dir, "primary.log")) as handle:
        log = handle.read()
    assert "Traceback" not in log and "never retrieved" not in log  # no connection task crashed
    connection.execute("INSERT OR REPLACE INTO kv VALUES (1, 'still here')")
    assert connection.execute("SELECT v FROM kv WHERE k = 1").fetchall() == [("still here",)]
    connection.close()
