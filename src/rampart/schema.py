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
from rampart.db.citus import SHARD_KEY, TablePlacement
from rampart.events.webhooks import webhooks_resource
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


# Rampart's own resources, declared before the app's: their tables are in Rampart's migrations.
FRAMEWORK_RESOURCES = ("users", "webhooks")


def framework_resources(settings: Settings, roles: Roles) -> list[Resource]:
    """Rampart's own resources: the users (/admin/users) and the webhooks (/admin/webhooks)."""
    return [
        users_resource(roles),
        webhooks_resource(allow_private_networks=settings.webhooks_allow_private_networks),
    ]


def declared_resources(settings: Settings, roles: Roles) -> list[Resource]:
    """Rampart's own resources plus those of the configured app (`RAMPART_APP`)."""
    target = app_target(settings)
    if isinstance(target, list):
        return [*framework_resources(settings, roles), *target]
    return list(target.services.registry)  # an application: its registry already holds Rampart's


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
    from rampart.auth.tables import define_auth_tables
    from rampart.events.tables import define_event_tables
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
    define_auth_tables(metadata)
    define_login_links_table(metadata)
    define_event_tables(metadata)
    # `users` and `webhooks` are Rampart's own resources; the app's migrations make only the app's tables,
    # each with its record of deleted rows (decision 0016).
    metadata.info["app_tables"] = frozenset(
        table for r in registry if r.name not in FRAMEWORK_RESOURCES for table in (r.table, r.deleted_table)
    )
    return metadata


# Rampart's own tables beside the resources', as a Citus cluster holds them (decision 0019). Every other
# table (sessions, refresh tokens, identities, OIDC states, signing keys, login links, webhooks,
# alembic_version, rampart_shard_keys) stays on the coordinator: read and written at sign-in, refresh and
# revocation, or by the dispatcher outside requests, where a reference table would be a write on every node.
_UUID_TEXT = "'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'"
_EVENT_ROW = f"(CASE WHEN t.resource_id ~ {_UUID_TEXT} THEN t.resource_id::uuid END)"
_FRAMEWORK_PLACEMENTS = {
    # The event of a change lives on its row's shard: written in the change's transaction on one worker,
    # joined with the row there by the audit log. Its shard key is its row's (an id made before the
    # move: the one listed for it), else its id's.
    "events": TablePlacement.distributed(
        SHARD_KEY,
        fill=f"coalesce((SELECT x.{SHARD_KEY} FROM rampart_shard_keys x WHERE x.id = {_EVENT_ROW}),"
        f" rampart_shard_key({_EVENT_ROW}), 0)",
    ),
    "event_queue": TablePlacement.distributed(
        SHARD_KEY,
        colocate_with="events",
        fill=f"coalesce((SELECT e.{SHARD_KEY} FROM events e WHERE e.id = t.id), 0)",
    ),
    # Written by the dispatcher outside requests, on the coordinator; Citus keeps no reference from a
    # local table to a distributed one, so their references to `events` go (the id still joins).
    "event_deliveries": TablePlacement.local(loose=["events"]),
    "webhook_attempts": TablePlacement.local(loose=["events"]),
}


def placements(resources: Sequence[Resource]) -> dict[str, TablePlacement]:
    """Every table's placement on a Citus cluster, from the resources' declarations (`Resource.placement`)
    and Rampart's own (`_FRAMEWORK_PLACEMENTS`), in the order their shard keys are filled: a row placed by
    a reference takes its shard key from the row it names (decision 0019)."""
    by_name = {r.name: r for r in resources}
    found: dict[str, TablePlacement] = {}

    def add(resource: Resource) -> None:
        if resource.table in found:
            return
        placement = resource.placement
        if placement.kind == "reference":
            found[resource.table] = found[resource.deleted_table] = TablePlacement.reference()
            return
        if placement.kind != "distributed":
            return
        by = placement.by
        if by is None:
            fill = "rampart_shard_key(t.id)"
            gone = fill
        else:
            target = by_name[getattr(resource.all_fields[by].type, "target", "")]
            add(target)  # its rows have their shard keys first
            fill = (
                f"coalesce((SELECT p.{SHARD_KEY} FROM {target.table} p WHERE p.id = t.{by}),"
                f" (SELECT p.{SHARD_KEY} FROM {target.deleted_table} p WHERE p.id = t.{by}),"
                f" rampart_shard_key(t.{by}))"
            )
            gone = f"coalesce({fill}, rampart_shard_key(t.id))"
        references = None
        if by is not None:
            reference = resource.all_fields[by].type
            references = (
                by_name[getattr(reference, "target", "")].table,
                getattr(reference, "on_delete", ""),
            )
        found[resource.table] = TablePlacement.distributed(
            SHARD_KEY,
            colocate_with="events",
            follows=by,
            fill=fill,
            ids=True,
            checked=True,
            references=references,
        )
        found[resource.deleted_table] = TablePlacement.distributed(
            SHARD_KEY, colocate_with="events", fill=gone, ids=True
        )

    for resource in resources:
        add(resource)
    return {**found, **_FRAMEWORK_PLACEMENTS}
