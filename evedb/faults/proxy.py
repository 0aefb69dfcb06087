"""A TCP proxy with faults that can be switched on and off while connections are live.

Owns: one listening port that forwards every accepted connection to one target address,
and the faults applied to the bytes in between:
- delay: each chunk is held `delay_ms` before it is forwarded (order kept);
- stall: nothing is forwarded (bytes queue up in order) until the stall ends;
- drop: bytes read are thrown away until the drop ends, then every connection is closed
  (a stream that lost bytes in the middle is garbage to a framed protocol: closing it is what
  a real lossy path ends in, and the endpoints re-dial);
- cut: every live connection is reset at once (RST on both sides, SO_LINGER 0).

Rules kept:
- the proxy runs its own asyncio loop on its own thread, so the campaign's blocking code can
  control it; every control call is thread-safe and returns after the change is in effect;
- a fault never reorders bytes within a connection (delay and stall keep a per-direction
  queue); only drop loses bytes, and then the connection does not survive it;
- `close()` stops listening and resets whatever is still connected.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

_CHUNK_BYTES = 1 << 16


class FaultProxy:
    """Listens on `listen_host`:`listen_port` (0: any free port) and forwards to `target`."""

    def __init__(self, target: tuple[str, int], listen_host: str = "127.0.0.1", listen_port: int = 0,
                 name: str = "proxy"):
        self.target = target
        self.name = name
        self.delay_ms = 0
        self._stalled_until = 0.0
        self._dropping_until = 0.0
        self._connections: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.connections_accepted = 0
        self.bytes_forwarded = 0
        self.bytes_dropped = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"evedb-{name}", daemon=True)
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accept, listen_host, listen_port))
        self.address = self._server.sockets[0].getsockname()[:2]

    @property
    def address_text(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    # --- control (thread-safe) ---

    def set_delay(self, delay_ms: int) -> None:
        self.delay_ms = max(0, int(delay_ms))

    def stall(self, seconds: float) -> None:
        """Forward nothing for `seconds`; queued bytes go out, in order, when it ends."""
        self._stalled_until = time.monotonic() + seconds

    def drop(self, seconds: float) -> None:
        """Throw bytes away for `seconds`, then close every connection."""
        self._dropping_until = time.monotonic() + seconds
        self._loop.call_soon_threadsafe(self._loop.call_later, seconds, self._close_all, False)

    def cut(self) -> None:
        """Reset every live connection now (both sides see a connection reset)."""
        self._call(self._async(self._close_all, True))

    def heal(self) -> None:
        """End every fault at once (live connections stay up)."""
        self.delay_ms = 0
        self._stalled_until = 0.0
        self._dropping_until = 0.0

    def live_connections(self) -> int:
        return len(self._connections)

    def close(self) -> None:
        async def shut() -> None:
            self._server.close()
            self._close_all(True)

        try:
            self._call(shut())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    # --- internals (on the proxy's loop) ---

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    @staticmethod
    async def _async(function, *args):
        return function(*args)

    def _close_all(self, reset: bool) -> None:
        for pair in list(self._connections):
            for writer in pair:
                if reset:
                    sock = writer.get_extra_info("socket")
                    if sock is not None:
                        try:
                            # Linger 0: close() sends RST instead of FIN.
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        except OSError:
                            pass
                    writer.transport.abort()
                else:
                    writer.close()
        self._connections.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        try:
            target_reader, target_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()  # the target is down: the client sees a reset
            return
        pair = (client_writer, target_writer)
        self._connections.add(pair)
        try:
            await asyncio.gather(self._pump(client_reader, target_writer), self._pump(target_reader, client_writer))
        finally:
            self._connections.discard(pair)
            for writer in pair:
                writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward one direction; on EOF or error close the other side too."""
        queue: asyncio.Queue = asyncio.Queue()
        sender = asyncio.create_task(self._send_queued(queue, writer))
        try:
            while True:
                data = await reader.read(_CHUNK_BYTES)
                if not data:
                    break
                now = time.monotonic()
                if now < self._dropping_until:
                    self.bytes_dropped += len(data)
                    continue
                queue.put_nowait((now + self.delay_ms / 1000, data))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            queue.put_nowait(None)
            try:
                await sender
            except (OSError, asyncio.CancelledError):
                pass
            writer.close()

    async def _send_queued(self, queue: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        while True:
            item = await queue.get()
            if item is None:
                return
            due, data = item
            while True:
                now = time.monotonic()
                wait = max(due - now, self._stalled_until - now)
                if wait <= 0:
                    break
                await asyncio.sleep(min(wait, 0.05))
            if writer.is_closing():
                return
            writer.write(data)
            self.bytes_forwarded += len(data)
            await writer.drain()
