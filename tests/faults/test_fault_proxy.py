"""The fault proxy on real loopback sockets: it forwards, and each fault does what it says."""

from __future__ import annotations

import socket
import socketserver
import threading

import pytest

from evedb.faults.proxy import FaultProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def proxy():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started = FaultProxy(server.server_address, name="test")
    yield started
    started.close()
    server.shutdown()
    server.server_close()


def connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection(proxy.address, timeout=5)


def receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_forwards_both_ways_and_delay_keeps_order(proxy):
    sock = connect(proxy)
    sock.sendall(b"hello")
    assert receive(sock, 5) == b"hello"
    proxy.set_delay(30)
    for index in range(5):
        sock.sendall(bytes([65 + index]))
    assert receive(sock, 5) == b"ABCDE"
    proxy.heal()
    sock.close()


def test_stall_holds_bytes_until_it_ends_then_delivers_them_in_order(proxy):
    sock = connect(proxy)
    sock.sendall(b"x")
    assert receive(sock, 1) == b"x"
    proxy.stall(30)
    sock.sendall(b"one")
    sock.sendall(b"two")
    sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        sock.recv(10)  # nothing passes during the stall
    proxy.heal()
    sock.settimeout(5)
    assert receive(sock, 6) == b"onetwo"
    sock.close()


def test_cut_resets_every_live_connection_and_new_ones_work(proxy):
    first, second = connect(proxy), connect(proxy)
    for sock in (first, second):
        sock.sendall(b"a")
        assert receive(sock, 1) == b"a"
    proxy.cut()
    for sock in (first, second):
        try:
            data = sock.recv(10)
        except ConnectionResetError:
            data = b""
        assert data == b""
    assert proxy.live_connections() == 0
    third = connect(proxy)
    third.sendall(b"b")
    assert receive(third, 1) == b"b"
    third.close()


def test_drop_loses_bytes_then_closes_the_connection(proxy):
    sock = connect(proxy)
    sock.sendall(b"a")
    assert receive(sock, 1) == b"a"
    proxy.drop(0.5)
    sock.sendall(b"lost")
    try:
        data = receive(sock, 4)  # the drop ends by closing: EOF, never the lost bytes
    except ConnectionResetError:
        data = b""
    assert data == b""
    assert proxy.bytes_dropped >= 4
    sock.close()


def test_a_connection_to_a_dead_target_is_reset():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    proxy = FaultProxy(("127.0.0.1", dead_port))
    try:
        sock = connect(proxy)
        try:
            data = sock.recv(10)
        except ConnectionResetError:
            data = b""
        assert data == b""
        sock.close()
    finally:
        proxy.close()
