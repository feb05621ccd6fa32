"""The ASGI entry point for servers: `uvicorn --factory rampart.asgi:create`."""

from __future__ import annotations

from rampart.app import Rampart, create_app
from rampart.config import Settings
from rampart.ops.logging import configure_logging


def create() -> Rampart:
    settings = Settings()
    json_logs = settings.log_format == "json" or (settings.log_format == "auto" and settings.is_production)
    configure_logging(json=json_logs, level=settings.log_level)
    return create_app(settings)
