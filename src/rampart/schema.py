"""The whole database schema as SQLAlchemy metadata: core tables plus every declared resource."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from rampart.access.actor import Roles
from rampart.auth.users import users_resource
from rampart.config import Settings
from rampart.resources.spec import Registry, Resource

if TYPE_CHECKING:  # SQLAlchemy is loaded only to build migrations, never in a serving worker
    import sqlalchemy as sa


def declared_resources(settings: Settings, roles: Roles) -> list[Resource]:
    """The users resource plus the resources of the configured app (`RAMPART_APP`, module:function)."""
    module_name, _, func = settings.app.partition(":")
    declare = getattr(importlib.import_module(module_name), func or "declare")
    resources: list[Resource] = [users_resource(roles.names), *declare()]
    return resources


def build_metadata(settings: Settings | None = None) -> sa.MetaData:
    import sqlalchemy as sa

    from rampart.auth.sessions import define_sessions_table
    from rampart.auth.tables import define_auth_tables
    from rampart.db.outbox import define_event_queue_table, define_events_table
    from rampart.events.tables import define_delivery_tables
    from rampart.resources.tables import define_deleted_table, define_table

    settings = settings or Settings(database_url=None)
    metadata = sa.MetaData()
    registry = Registry()
    for resource in declared_resources(settings, Roles(settings.role_permissions)):
        registry.add(resource)
    tables = {r.name: r.table for r in registry}
    for resource in registry:
        define_table(resource, metadata, tables=tables)
        define_deleted_table(resource, metadata)
    define_sessions_table(metadata)
    define_auth_tables(metadata)
    define_events_table(metadata)
    define_event_queue_table(metadata)
    define_delivery_tables(metadata)
    return metadata
