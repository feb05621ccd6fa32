"""The whole database schema as SQLAlchemy metadata: core tables plus every declared resource."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rampart.access.actor import Roles
from rampart.auth.users import users_resource
from rampart.config import Settings
from rampart.resources.spec import Registry, Resource

if TYPE_CHECKING:  # SQLAlchemy is loaded only to build migrations, never in a serving worker
    import sqlalchemy as sa


def app_target(settings: Settings) -> Any:
    """What `RAMPART_APP` (`module:name`) names, resolved: a list of resources (a `declare()` function is
    called, a list or tuple taken as it is), or an application built by `create_app`."""
    module_name, _, attribute = settings.app.partition(":")
    target = getattr(importlib.import_module(module_name), attribute or "declare")
    if callable(target) and not hasattr(target, "services"):
        target = target()
    if hasattr(target, "services"):
        return target
    if isinstance(target, list | tuple) and all(isinstance(r, Resource) for r in target):
        return list(target)
    raise ValueError(
        f"RAMPART_APP={settings.app} names neither resources (a list, or a function that returns one)"
        " nor an application made by create_app"
    )


def declared_resources(settings: Settings, roles: Roles) -> list[Resource]:
    """The users resource plus the resources of the configured app (`RAMPART_APP`)."""
    target = app_target(settings)
    if isinstance(target, list):
        return [users_resource(roles), *target]
    return list(target.services.registry)  # an application: its registry already holds users


def build_metadata(settings: Settings | None = None) -> sa.MetaData:
    import sqlalchemy as sa

    from rampart.auth.login_links import define_login_links_table
    from rampart.auth.sessions import define_sessions_table
    from rampart.auth.tables import define_auth_tables
    from rampart.db.outbox import define_event_queue_table, define_events_table
    from rampart.events.tables import define_delivery_tables
    from rampart.resources.tables import define_table

    settings = settings or Settings(database_url=None)
    metadata = sa.MetaData()
    registry = Registry()
    for resource in declared_resources(settings, Roles(settings.role_permissions)):
        registry.add(resource)
    tables = {r.name: r.table for r in registry}
    for resource in registry:
        define_table(resource, metadata, tables=tables)
    define_sessions_table(metadata)
    define_auth_tables(metadata)
    define_login_links_table(metadata)
    define_events_table(metadata)
    define_event_queue_table(metadata)
    define_delivery_tables(metadata)
    return metadata
