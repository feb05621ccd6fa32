"""Spreading connections evenly over the workers of `rampart serve` (decision 0013).

The workers share one listening socket, and uvloop accepts every connection waiting on it at once: the
worker that wakes first takes the whole burst, and its queue sets everyone's tail latency. Here a worker
accepts a connection only while it holds no more connections than the least loaded of the others;
otherwise it leaves the socket to them and looks again a millisecond later. The counts are kept in a
small file the supervisor creates (`RAMPART_BALANCE_FILE`), one slot per worker process, each written
only by its owner. A worker that is draining, or whose process is gone, does not count; one that does
not take the waiting connections (stuck in a long step) is not waited for past `PATIENCE`.

`BalancedLoop`, the event loop of several workers, is uvloop's with a `create_server` that returns a
`BalancedListener` on the shared socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import mmap
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import uvloop

from rampart.lib.pids import alive

log = logging.getLogger("rampart.ops.balance")

ENV = "RAMPART_BALANCE_FILE"
PATIENCE_ENV = "RAMPART_BALANCE_PATIENCE"  # seconds; PATIENCE when unset
# A connection is left to the other workers for at most PATIENCE seconds; past that, this worker accepts
# regardless for ALONE seconds. A machine too busy for that falls back to first-come: raise PATIENCE_ENV.
PATIENCE = 0.1
ALONE = 1.0
RECHECK = 0.001  # seconds between looks while over the share
_QUIET = 0.05  # no look at a waiting connection for this long: the wait ended (another worker took it)
_SLOT = struct.Struct("qqq")  # pid, connections held, accepting (1/0)


def create_ledger_file(path: str, slots: int) -> None:
    """The supervisor's part: a zeroed file of `slots` slots (several per worker: replacements reuse
    the slots of processes that are gone)."""
    with open(path, "wb") as f:
        f.write(bytes(_SLOT.size * slots))


class Ledger:
    """The shared file: per worker process, its pid, the connections it holds and whether it accepts."""

    def __init__(self, path: str, *, pid: int | None = None) -> None:
        self.pid = os.getpid() if pid is None else pid
        self._fd = os.open(path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, os.fstat(self._fd).st_size)
        self.index = -1
        self.held = 0  # connections this worker holds
        self._accepting = True

    def claim(self) -> None:
        """Take a free slot (never used, or left by a process that is gone), under the file's lock."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            for i, (pid, _, _) in enumerate(_SLOT.iter_unpack(self._map)):
                if pid == 0 or (pid != self.pid and not alive(pid)):
                    self.index = i
                    self._write()
                    return
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        raise RuntimeError(f"no free slot in the connection ledger ({len(self._map) // _SLOT.size} slots)")

    def add(self, n: int) -> None:
        self.held += n
        self._write()

    def stop_accepting(self) -> None:
        self._accepting = False
        self._write()

    def least_of_others(self) -> int | None:
        """The fewest connections any other live, accepting worker holds (None: there is none)."""
        least: int | None = None
        for pid, held, accepting in _SLOT.iter_unpack(self._map):
            if pid == 0 or pid == self.pid or not accepting:
                continue
            if (least is None or held < least) and alive(pid):
                least = held
        return least

    def _write(self) -> None:
        if self.index >= 0:
            _SLOT.pack_into(self._map, self.index * _SLOT.size, self.pid, self.held, int(self._accepting))


# This process's listener, once `BalancedLoop` made it: the HTTP protocol reports closed connections to it
# (`connection_closed`).
_listener: BalancedListener | None = None


def connection_closed() -> None:
    """A connection this worker accepted is gone (called by the HTTP protocol's connection_lost)."""
    if _listener is not None:
        _listener.closed_one()


class BalancedListener:
    """Accepts from the shared socket while this worker's share allows; what uvicorn keeps as a server."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        ledger: Ledger,
        *,
        patience: float = PATIENCE,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._factory = protocol_factory
        self._ledger = ledger
        self._patience = patience
        self._waiting_since = 0.0  # when this worker began to leave a connection to the others
        self._alone_until = 0.0  # until then, accept regardless of the others (they were too slow)
        self._last_look = 0.0
        self._reading = False
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        sock.setblocking(False)
        self.sockets = (sock,)
        self._read()

    def close(self) -> None:
        """Stop accepting here; the other workers take every new connection from now on."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._ledger.stop_accepting()
        self._unread()
        self._sock.close()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def closed_one(self) -> None:
        self._ledger.add(-1)
        self._read()  # below the share again, perhaps: look at the socket now

    def _read(self) -> None:
        if not self._reading and not self._closed.is_set():
            self._loop.add_reader(self._sock.fileno(), self._on_readable)
            self._reading = True

    def _unread(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False

    def _may_accept(self) -> bool:
        least = self._ledger.least_of_others()
        now = time.monotonic()
        if least is None or self._ledger.held <= least or now < self._alone_until:
            self._waiting_since = 0.0
            return True
        if not self._waiting_since or now - self._last_look > _QUIET:
            self._waiting_since = now  # a new wait (the socket went quiet since the last one)
        self._last_look = now
        if now - self._waiting_since >= self._patience:
            # The others leave connections waiting: take them all for a while, then share again.
            self._waiting_since = 0.0
            self._alone_until = now + ALONE
            return True
        return False

    def _on_readable(self) -> None:
        while not self._closed.is_set():
            if not self._may_accept():
                self._unread()
                self._loop.call_later(RECHECK, self._read)
                return
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # another worker took it
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue  # the client gave up while queued
                # Out of descriptors (EMFILE) or memory: leave the connection queued, try again shortly.
                log.warning("cannot accept a connection: %s", exc.strerror)
                self._unread()
                self._loop.call_later(0.1, self._read)
                return
            self._ledger.add(1)
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self._loop.create_task(self._start(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _start(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except Exception:  # the connection failed before its protocol saw it: it is not held
            log.debug("accepted connection could not be started", exc_info=True)
            self._ledger.add(-1)
            with contextlib.suppress(OSError):
                conn.close()


def _patience() -> float:
    try:
        value = float(os.environ.get(PATIENCE_ENV) or PATIENCE)
    except ValueError:
        value = -1.0
    if 0 < value <= 60:
        return value
    log.warning("%s must be a number of seconds in (0, 60]; using %s", PATIENCE_ENV, PATIENCE)
    return PATIENCE


class BalancedLoop(uvloop.Loop):
    """uvloop, whose servers on a socket shared by the workers balance their connections (see above)."""

    async def create_server(
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], *args: Any, **kwargs: Any
    ) -> Any:
        global _listener
        sock, path = kwargs.get("sock"), os.environ.get(ENV)
        if sock is None or not path or args or kwargs.get("ssl") is not None or _listener is not None:
            return await super().create_server(protocol_factory, *args, **kwargs)
        sock.listen(kwargs.get("backlog", 100))  # uvicorn binds; listening is the server's part
        ledger = Ledger(path)
        ledger.claim()
        _listener = BalancedListener(self, sock, protocol_factory, ledger, patience=_patience())
        return _listener
