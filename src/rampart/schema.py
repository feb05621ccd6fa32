"""The whole database schema as SQLAlchemy metadata: core tables plus every declared resource."""

from __future__ import annotations

import sqlalchemy as sa

from rampart.auth.sessions import define_sessions_table
from rampart.config import Settings
from rampart.db.outbox import define_events_table
from rampart.resources.spec import Registry
from rampart.resources.tables import define_table


def build_metadata(settings: Settings | None = None) -> sa.MetaData:
    from rampart.access.actor import Roles
    from rampart.app import declared_resources

    settings = settings or Settings(database_url=None)
    metadata = sa.MetaData()
    registry = Registry()
    for resource in declared_resources(settings, Roles(settings.role_permissions)):
        registry.add(resource)
    tables = {r.name: r.table for r in registry}
    for resource in registry:
        define_table(resource, metadata, tables=tables)
    define_sessions_table(metadata)
    define_events_table(metadata)
    return metadata
