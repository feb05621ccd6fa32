"""The ASGI entry point for servers: `uvicorn --factory rampart.asgi:create`."""

from __future__ import annotations

import gc

from rampart import __version__
from rampart.app import Rampart, create_app
from rampart.config import Settings
from rampart.ops.logging import configure_logging
from rampart.schema import app_target


def create() -> Rampart:
    settings = Settings()
    configure_logging(json=settings.json_logs, level=settings.log_level)
    if settings.sentry_dsn is not None and settings.sentry_dsn.get_secret_value():
        from rampart.ops.error_tracking import init_error_tracking

        init_error_tracking(
            settings.sentry_dsn.get_secret_value(), environment=settings.env, release=__version__
        )
    # RAMPART_APP may name an application built by create_app (with its own routes, middleware and
    # subscribers): serve that one; otherwise build one around the resources it names.
    target = app_target(settings)
    app = target if isinstance(target, Rampart) else create_app(settings)
    # Everything built so far lives as long as the process: keep the cyclic collector from walking it
    # again and again, and let young garbage pile up a little longer between collections (fewer pauses,
    # which shows in p99 latency).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)
    return app
