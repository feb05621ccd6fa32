"""GCRA limits shared by the processes of one host, without Redis: a table in a memory-mapped file.

`rampart serve --workers N` makes the file (in /dev/shm, memory) and every worker maps it, so a limit
of 20 a minute means 20 for the whole server, whichever worker takes each request. Each hit takes the
file's lock (flock: the kernel releases it when a holder dies, so a worker killed mid-hit cannot leave
it taken), finds the key's slot, and runs the same `_decide` step in integer microseconds as the other
backends, so it decides exactly as they do. See docs/decisions/0017-host-rate-limits.md for the
measurements behind this shape.

The table is a set-associative cache: the key's 16-byte BLAKE2b digest picks a bucket of `WAYS` slots
(digest, TAT). A key not in its bucket takes the slot with the smallest TAT: one whose TAT has passed
is equivalent to an absent key, so reusing it changes no decision; when all of them are live, the one
nearest to a full bucket is forgotten (as MemoryRateLimiter forgets its least recently used key).
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

from rampart.lib.ratelimit import _US, Decision, _decide, _interval_us
from rampart.lib.rates import Rate

WAYS = 8
DEFAULT_SLOTS = 131_072  # 3 MiB: live keys are the callers of the last period, evicted as above
_DIGEST = 16
_SLOT = struct.Struct(f"<{_DIGEST}sq")  # key digest, TAT (µs of the host's monotonic clock)
_TAT = struct.Struct("<q")
_TATS = struct.Struct("<" + f"{_DIGEST}xq" * WAYS)  # the TATs of one bucket
_BUCKET = _SLOT.size * WAYS
# Header: magic, then the boot the TATs belong to. The monotonic clock restarts at boot, so the TATs of
# a file that outlived a reboot (not on tmpfs) would lie in the far future: such a table is emptied.
_MAGIC = b"RAMPRL01"
_HEADER = 64
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _boot_id() -> bytes:
    try:
        return _BOOT_ID.read_bytes().strip()[: _HEADER - len(_MAGIC)]
    except OSError:  # not Linux: the file must then not outlive a reboot (keep it on tmpfs)
        return b""


class SharedMemoryRateLimiter:
    """Limiter shared by every process that opens the same file (made, at `slots` slots, if absent)."""

    def __init__(
        self, path: str, *, slots: int = DEFAULT_SLOTS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if slots < WAYS or slots % WAYS:
            raise ValueError(f"slots must be a positive multiple of {WAYS}")
        # A monotonic clock by default: CLOCK_MONOTONIC is one clock for every process of the host.
        self._clock = clock
        # O_NOFOLLOW: the file may sit in a world-writable folder such as /dev/shm.
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            size = self._prepare(_HEADER + slots * _SLOT.size)
            self._map = mmap.mmap(self._fd, size)
        except BaseException:
            os.close(self._fd)
            raise
        self._buckets = (size - _HEADER) // _BUCKET

    def _prepare(self, wanted: int) -> int:
        """The table's size, after making or emptying it as needed (under the lock: workers start at once)."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(self._fd).st_size
            header = os.pread(self._fd, _HEADER, 0)
            boot = _boot_id()
            if size == 0:
                os.ftruncate(self._fd, wanted)
                size = wanted
            elif not header.startswith(_MAGIC) and header.strip(b"\0"):
                raise ValueError("the rate limit file holds something else than a rate limit table")
            elif (size - _HEADER) % _BUCKET or size <= _HEADER:
                raise ValueError("the rate limit file has a size no table of buckets has")
            elif header[len(_MAGIC) :].rstrip(b"\0") == boot:
                return size
            else:  # made by another boot (or never initialized): its TATs mean nothing now
                os.pwrite(self._fd, bytes(size - _HEADER), _HEADER)
            os.pwrite(self._fd, (_MAGIC + boot).ljust(_HEADER, b"\0"), 0)
            return size
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    async def hit(self, key: str, rate: Rate) -> Decision:
        """Count one request for `key` under `rate`."""
        digest = hashlib.blake2b(key.encode(), digest_size=_DIGEST).digest()
        start = _HEADER + int.from_bytes(digest[:8], "little") % self._buckets * _BUCKET
        end = start + _BUCKET
        table = self._map
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            now = round(self._clock() * _US)  # read under the lock: hits are applied in time order
            found = table.find(digest, start, end)
            while found >= 0 and (found - start) % _SLOT.size:  # a match across two slots: not a key
                found = table.find(digest, found + 1, end)
            if found >= 0:
                slot, stored = found, _TAT.unpack_from(table, found + _DIGEST)[0]
            else:
                tats = _TATS.unpack_from(table, start)
                slot, stored = start + _SLOT.size * min(range(WAYS), key=tats.__getitem__), None
            decision, new_tat = _decide(stored, now, _interval_us(rate), rate.count)
            if new_tat is not None:
                # The TAT first: a writer killed between the two writes leaves the slot's old key with a
                # TAT it could have had, never a garbage TAT.
                _TAT.pack_into(table, slot + _DIGEST, new_tat)
                if stored is None:
                    table[slot : slot + _DIGEST] = digest
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return decision

    async def close(self) -> None:
        """Unmap this process's view; the table stays for the other processes (its maker removes it)."""
        if not self._map.closed:
            self._map.close()
            os.close(self._fd)
