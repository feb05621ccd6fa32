"""The supervisor of `rampart serve --workers N` (decision 0026): uvicorn's, with a liveness check that
never waits on a worker that is already gone.

uvicorn pings each worker twice a second and waits up to `timeout_worker_healthcheck` (30 s here) for the
answer. A worker that has begun to exit (recycled after `--max-requests`, or crashed) never answers, and
the supervisor, which holds the pipe's other end too, sees no end-of-file: it sat out the whole timeout
with no worker replaced and a SIGTERM unheeded. Here the wait ends as soon as the worker's process is gone
(it is replaced at once) or a signal waits for the supervisor; a worker alive but silent still gets the
full timeout before it is killed and replaced, as in uvicorn.
"""

from __future__ import annotations

import logging
import pickle
import time

from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

log = logging.getLogger("uvicorn.error")

_SLICE = 0.05  # seconds between looks at the worker's process while waiting for its answer


class Supervisor(Multiprocess):
    def keep_subprocess_alive(self) -> None:
        for idx, process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            answer = self._answers(process, self.config.timeout_worker_healthcheck)
            if answer is None:
                return  # a signal is waiting: the run loop handles it first, then looks again
            if answer:
                continue
            process.kill()  # gone already, or hung: make sure, and collect it
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # the app or the socket is broken: so is a replacement
                log.error("Child process [%s] failed to start, stopping the parent process.", process.pid)
                self.should_exit.set()
                return
            log.info("Child process [%s] died", process.pid)
            replacement = Process(self.config, self.sockets)
            replacement.start()
            self.processes[idx] = replacement

    def _answers(self, process: Process, timeout: float) -> bool | None:
        """True when the worker answers a ping within `timeout`, False when it does not or its process
        is gone (known within `_SLICE`), None when a signal arrived for the supervisor meanwhile."""
        if not process.process.is_alive():
            return False
        deadline = time.monotonic() + timeout
        try:
            process.parent_conn.send(b"ping")
            while not process.parent_conn.poll(_SLICE):
                if self.signal_queue:
                    return None
                if not process.process.is_alive() or time.monotonic() >= deadline:
                    return False
            process.parent_conn.recv()
        except (OSError, EOFError, pickle.UnpicklingError):
            return False
        return True
