"""`rampart serve --log-file`: every process's output into one file, rotated by size and age.

Several worker processes must not rotate one file each on their own (they would rename it under each
other and lose lines). So the workers keep writing to their stdout and stderr, which `serve` turns into
one pipe before they start; a thread of the supervisor reads it and is the file's only writer. Lines are
never split across two files.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

INTERVALS = {"hourly": 3600.0, "daily": 86_400.0}


class LogFile:
    """Append-only lines, rotated when larger than `max_bytes` or older than `interval` (either may be
    None); the newest `keep` rotated files are kept (`<name>.<UTC time>`, oldest removed first)."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int | None,
        interval: float | None,
        keep: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.interval = interval
        self.keep = keep
        self._clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab")
        self._opened = clock()

    def write(self, lines: bytes) -> None:
        """Write whole lines (the caller splits at newlines), rotating first when due."""
        size = self._file.tell()
        # Never an empty file: a line larger than max_bytes still goes somewhere.
        if size and (
            (self.max_bytes is not None and size + len(lines) > self.max_bytes)
            or (self.interval is not None and self._clock() - self._opened >= self.interval)
        ):
            self.rotate()
        self._file.write(lines)
        self._file.flush()

    def rotate(self) -> None:
        self._file.close()
        name = f"{self.path.name}.{time.strftime('%Y%m%d-%H%M%S', time.gmtime(self._clock()))}"
        target, n = self.path.with_name(name), 0
        while target.exists():  # several rotations within a second
            n += 1
            target = self.path.with_name(f"{name}.{n}")
        self.path.rename(target)
        rotated = sorted(self.rotated(), key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
        for old in rotated[self.keep :]:
            old.unlink(missing_ok=True)
        self._file = self.path.open("ab")
        self._opened = self._clock()

    def rotated(self) -> list[Path]:
        return [p for p in self.path.parent.glob(f"{self.path.name}.*") if p.is_file()]

    def close(self) -> None:
        self._file.close()


def capture_output(log: LogFile) -> Callable[[], None]:
    """Send this process's stdout and stderr (and its future children's) to `log`; returns `stop`.

    `stop` puts the original descriptors back, writes what is left in the pipe and closes the file: call
    it after the children have exited.
    """
    read_end, write_end = os.pipe()
    saved = (os.dup(1), os.dup(2))
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)

    stopping = threading.Event()

    def pump() -> None:
        # Children (and multiprocessing's helper process, which outlives the workers) hold the write end
        # too, so end of file may never come: once stopping, read what is there and finish.
        pending = b""
        while True:
            ready, _, _ = select.select([read_end], [], [], 0.1)
            chunk = os.read(read_end, 65_536) if ready else b""
            if ready and not chunk:
                break  # every writer is gone
            pending += chunk
            cut = pending.rfind(b"\n") + 1
            if cut:
                log.write(pending[:cut])
                pending = pending[cut:]
            if stopping.is_set() and not ready:
                break
        if pending:
            log.write(pending + b"\n")
        os.close(read_end)

    thread = threading.Thread(target=pump, name="rampart-log-file", daemon=True)
    thread.start()

    def stop() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for target, fd in enumerate(saved, start=1):  # stdout, stderr
            os.dup2(fd, target)
            os.close(fd)
        stopping.set()
        thread.join(timeout=5)
        log.close()

    return stop
