"""Which asyncio event loop a node runs on: uvloop when it is installed, else asyncio's own.

Rules kept: the choice is made once per process, from the environment only
(`EVEDB_EVENT_LOOP=asyncio` forces the standard loop, for comparison or when a platform's
uvloop misbehaves); the node's code is the same on both, since it uses only the asyncio API
(streams, transports, signal handlers, run_in_executor), which uvloop implements.

Why: a node under kv load spent about a third of its busy time in the standard loop's
selector and socket-transport code (py-spy, eighth session); uvloop does that work in C
(libuv).  Measured side by side in evedb/DESIGN.md ("The pair").
"""

from __future__ import annotations

import asyncio
import os


def chosen() -> str:
    """"uvloop" or "asyncio": the loop `run` will use in this process."""
    if os.environ.get("EVEDB_EVENT_LOOP", "").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(coroutine):
    """asyncio.run on the chosen loop."""
    if chosen() == "uvloop":
        import uvloop

        return uvloop.run(coroutine)
    return asyncio.run(coroutine)
