"""The whole database schema as SQLAlchemy metadata: core tables plus every declared resource."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
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


# Apps shipped inside Rampart (the demo), each with its own migrations beside its module.
_BUNDLED_APPS = ("rampart.apps.tasks.resources",)


def migrations_dir(settings: Settings) -> Path:
    """The folder of the app's own migrations (decision 0020): `RAMPART_MIGRATIONS_DIR`; else, for an app
    shipped inside Rampart (the demo), the `migrations` folder beside its module; else `./migrations`."""
    if settings.migrations_dir:
        return Path(settings.migrations_dir).resolve()
    module_name = settings.app.partition(":")[0]
    if module_name.partition(".")[0] == "rampart":
        folder = _folder_beside(module_name)
        if folder is not None:
            return folder
    return (Path.cwd() / "migrations").resolve()


def _folder_beside(module_name: str) -> Path | None:
    """The `migrations` folder beside a module, found without importing it."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).resolve().parent / "migrations"


def migration_folders(settings: Settings, resources: Sequence[Resource]) -> list[Path]:
    """The app's migration folders, in the order their chains apply after Rampart's: those of the apps
    shipped in Rampart whose resources `resources` holds (the demo's, for an app that extends it), then
    the app's own, where `makemigrations` writes."""
    declared = {id(r) for r in resources}
    used: list[Path] = []
    unused: list[Path] = []
    for name in _BUNDLED_APPS:
        module = sys.modules.get(name)  # loaded when the app uses it
        theirs = {id(v) for v in vars(module).values() if isinstance(v, Resource)} if module else set()
        folder = _folder_beside(name)
        if folder is not None:
            (used if declared & theirs else unused).append(folder)
    own = migrations_dir(settings)
    if own in unused:  # RAMPART_APP names the demo, but the resources are others (given to create_app)
        own = (Path.cwd() / "migrations").resolve()
    return [*(folder for folder in used if folder != own), own]


def build_metadata(settings: Settings | None = None) -> sa.MetaData:
    """Every declared table; `metadata.info["app_tables"]` names the app's (the others are Rampart's)."""
    import sqlalchemy as sa

    from rampart.auth.login_links import define_login_links_table
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
    define_login_links_table(metadata)
    define_events_table(metadata)
    define_event_queue_table(metadata)
    define_delivery_tables(metadata)
    # `users` is Rampart's own resource; the app's migrations make only the app's tables, each with its
    # record of deleted rows (decision 0016).
    metadata.info["app_tables"] = frozenset(
        table for r in registry if r.name != "users" for table in (r.table, r.deleted_table)
    )
    return metadata
