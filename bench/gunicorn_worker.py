"""gunicorn's worker class for the A/B of bench/ab.py: uvicorn's gunicorn worker (package uvicorn-worker)
with the event loop, HTTP protocol and options `rampart serve` gives uvicorn, so that only the process
model differs (gunicorn's arbiter and its one shared listening socket)."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker  # type: ignore[import-not-found]

from rampart.ops.http_protocol import HeadDeadlineProtocol


class RampartWorker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "uvloop",
        "http": functools.partial(HeadDeadlineProtocol, head_timeout=10.0),
        "ws": "none",
        "access_log": False,
        "server_header": False,
        "date_header": True,
    }
