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
    dsn = settings.sentry_dsn.get_secret_value() if settings.sentry_dsn is not None else ""
    if dsn:
        from rampart.ops.error_tracking import init_error_tracking

        init_error_tracking(dsn, environment=settings.env, release=__version__)
    # RAMPART_APP names an application built by create_app (served as is), or resources to build one around.
    target = app_target(settings)
    app = target if isinstance(target, Rampart) else create_app(settings)
    # Everything built so far lives as long as the process: keep the cyclic collector from walking it again
    # and again, and let young garbage pile up longer between collections (fewer pauses: a better p99).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)
    return app
