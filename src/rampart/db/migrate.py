"""Running Alembic migrations under a PostgreSQL advisory lock, generating an app's, and reporting pending
ones.

Two chains, each in its own folder (decision 0020): Rampart's own (`rampart/migrations/versions`, branch
label `rampart`), and the app's (`RAMPART_MIGRATIONS_DIR`), whose first revision starts from nothing and
depends on Rampart's first. Upgrading brings Rampart's chain to its head first, then every head, so an
app's revision always finds the framework's tables as the installed Rampart makes them. Several
instances starting at once all call `upgrade`; the lock makes one of them migrate and the others find
nothing left to do.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rampart.db.migration_review import Finding, created_tables, drops, locking, table_of, walk
from rampart.db.pool import Database
from rampart.db.revisions import History, read_history

if TYPE_CHECKING:  # Alembic is loaded only when migrating, never in a serving worker
    import sqlalchemy as sa
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
CORE_VERSIONS = MIGRATIONS_DIR / "versions"
ADVISORY_LOCK_KEY = 7_272_740_001
APP_BRANCH = "app"  # the branch label of an app's first revision


class MigrationError(Exception):
    """A migration Rampart will not run or write, said in one line with what to do instead."""


def sqlalchemy_url(dsn: str) -> str:
    """The SQLAlchemy (asyncpg dialect) form of a libpq-style DSN."""
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+asyncpg://" + dsn[len(prefix) :]
    return dsn


def version_folders(versions_dir: str | Path | None) -> tuple[Path, ...]:
    """Rampart's versions folder, then the app's (when it has one)."""
    if versions_dir is None:
        return (CORE_VERSIONS,)
    app = Path(versions_dir).resolve()
    return (CORE_VERSIONS,) if app == CORE_VERSIONS else (CORE_VERSIONS, app)


def alembic_config(dsn: str | None = None, *, versions_dir: str | Path | None = None) -> Config:
    """Alembic settings: Rampart's own versions, plus the app's `versions_dir`."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' must be doubled for configparser interpolation; one folder per line, so paths may hold spaces.
    folders = "\n".join(str(folder) for folder in version_folders(versions_dir))
    config.set_main_option("version_locations", folders.replace("%", "%%"))
    config.set_main_option("path_separator", "newline")
    if dsn is not None:
        config.set_main_option("sqlalchemy.url", sqlalchemy_url(dsn).replace("%", "%%"))
    return config


def history(versions_dir: str | Path | None = None) -> History:
    return read_history(version_folders(versions_dir))


def check_heads(found: History) -> None:
    """One head per chain, or a MigrationError saying how to get there."""
    core = found.folder_heads(CORE_VERSIONS)
    if len(core) != 1:
        raise MigrationError(
            f"Rampart's own migrations have {len(core)} heads ({', '.join(core) or 'none'}) in "
            f"{CORE_VERSIONS}: this installation of Rampart is inconsistent; reinstall it"
        )
    for folder in found.folders[1:]:
        heads = found.folder_heads(folder)
        if len(heads) > 1:
            raise MigrationError(
                f"the app's migrations in {folder} have diverged (heads {', '.join(heads)}): run "
                "`rampart makemigrations --merge`, review and commit the merge revision, then migrate"
            )


def upgrade(dsn: str, *, versions_dir: str | Path | None = None) -> None:
    """Apply every pending revision: Rampart's chain to its head, then the app's."""
    from alembic import command

    found = history(versions_dir)
    check_heads(found)
    config = alembic_config(dsn, versions_dir=versions_dir)
    (core_head,) = found.folder_heads(CORE_VERSIONS)
    with _explained(found):
        command.upgrade(config, core_head)  # a no-op when it is applied (or an ancestor of what is)
        command.upgrade(config, "heads")


@functools.cache
def _cached_history(versions_dir: str | None) -> History:
    return history(versions_dir)


async def pending_migrations(db: Database, *, versions_dir: str | Path | None = None) -> list[str]:
    """Heads not yet applied to the database (empty when up to date). Read from the version files once."""
    exists = await db.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
    rows: list[str] = []
    if exists:
        rows = [r["version_num"] for r in await db.fetch("SELECT version_num FROM alembic_version")]
    return _cached_history(str(versions_dir) if versions_dir is not None else None).pending(rows)


# ----- writing an app's revisions -------------------------------------------------------------------------


@dataclass
class Generated:
    """What `make_migration` found and did."""

    path: Path | None = None  # the revision written; None when nothing was
    dropped: list[str] = field(default_factory=list)  # tables and columns it drops (refused unless allowed)
    locking: list[Finding] = field(default_factory=list)  # operations that lock a table in use
    framework: list[str] = field(default_factory=list)  # differences in Rampart's own tables, not written


def writable_folder(folder: Path) -> Path:
    """`folder`, resolved, unless it lies inside the installed Rampart package: revisions written there
    are lost on reinstall and cannot be committed."""
    resolved = folder.resolve()
    if resolved == MIGRATIONS_DIR or MIGRATIONS_DIR in resolved.parents:
        raise MigrationError(
            f"refusing to write into Rampart's own migrations ({resolved}): set RAMPART_MIGRATIONS_DIR to "
            "your app's migrations folder (default ./migrations)"
        )
    if {"site-packages", "dist-packages"} & set(resolved.parts):
        raise MigrationError(
            f"refusing to write into an installed package ({resolved}): set RAMPART_APP to your app and "
            "RAMPART_MIGRATIONS_DIR to a folder of your project (default ./migrations)"
        )
    return resolved


def make_migration(
    dsn: str,
    message: str,
    *,
    versions_dir: Path,
    metadata: sa.MetaData,
    app_tables: frozenset[str],
    allow_destructive: bool = False,
) -> Generated:
    """Compare the declared tables (`metadata`) with the database, brought up to date first, and write the
    app's changes as a revision into `versions_dir`.

    Only the tables in `metadata` and those the app's revisions created are compared: any other table of
    the database is left alone. Changes to Rampart's own tables (not the app's) are reported, not
    written: only Rampart's chain changes them. Nothing is written when there is no change, or when the
    revision would drop a table or a column and `allow_destructive` is false.
    """
    from alembic import command

    folder = writable_folder(versions_dir)
    upgrade(dsn, versions_dir=folder)
    found = history(folder)
    app_heads = found.folder_heads(folder)
    # A table the app's chain made and no longer declares is the app's to drop; any other is left alone.
    app_tables = app_tables | tables_made_by(folder)
    config = alembic_config(dsn, versions_dir=folder)
    config.attributes["target_metadata"] = metadata
    config.attributes["compared_tables"] = frozenset(metadata.tables) | app_tables
    result = Generated()

    def review(context: Any, revision: Any, directives: list[Any]) -> None:
        script = directives[0]
        upgrade_ops, downgrade_ops = script.upgrade_ops, script.downgrade_ops
        result.framework = [_describe(op) for op in upgrade_ops.ops if table_of(op) not in app_tables]
        upgrade_ops.ops[:] = [op for op in upgrade_ops.ops if table_of(op) in app_tables]
        downgrade_ops.ops[:] = [op for op in downgrade_ops.ops if table_of(op) in app_tables]
        result.dropped = drops(upgrade_ops)
        result.locking = locking(upgrade_ops)
        if upgrade_ops.is_empty() or (result.dropped and not allow_destructive):
            directives.clear()  # Alembic then writes no file
            return
        new = created_tables(upgrade_ops)
        for op in walk(upgrade_ops):
            if type(op).__name__ == "CreateIndexOp" and op.table_name not in new:
                op.if_not_exists = True  # finds an index built CONCURRENTLY beforehand (the recipe)

    first = not app_heads
    core_base = min(r.id for r in found.revisions.values() if r.folder == CORE_VERSIONS and not r.down)
    Path(folder).mkdir(parents=True, exist_ok=True)
    with _explained(found):
        script = command.revision(
            config,
            message=message,
            autogenerate=True,
            head="base" if first else app_heads[0],
            version_path=str(folder),
            branch_label=APP_BRANCH if first else None,
            # An app's chain needs Rampart's first revision (users), which its tables reference.
            depends_on=core_base if first else None,
            process_revision_directives=review,
        )
    if script is not None and not isinstance(script, list):
        result.path = Path(script.path)
    return result


def tables_made_by(folder: Path) -> set[str]:
    """The tables that the revisions in `folder` create (`op.create_table`) or rename to."""
    made: set[str] = set()
    for path in sorted(folder.glob("*.py")) if folder.is_dir() else ():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            position = {"create_table": 0, "rename_table": 1}.get(node.func.attr)
            if position is not None and len(node.args) > position:
                name = node.args[position]
                if isinstance(name, ast.Constant) and isinstance(name.value, str):
                    made.add(name.value)
    return made


def merge_heads(message: str, *, versions_dir: Path) -> Path | None:
    """Join the diverged heads of the app's chain with a merge revision; None when there is one head."""
    from alembic import command

    folder = writable_folder(versions_dir)
    found = history(folder)
    heads = found.folder_heads(folder)
    if len(heads) < 2:
        return None
    with _explained(found):
        script = command.merge(alembic_config(versions_dir=folder), heads, message=message)
    return Path(script.path) if script is not None else None


def _describe(op: Any) -> str:
    """ "events: add_column, remove_index": which kinds of change an operation makes to which table."""
    diffs = op.as_diffs() if hasattr(op, "ops") else [op.to_diff_tuple()]
    # A column's changes come as a list of tuples, every other change as one tuple.
    kinds = dict.fromkeys(d[0][0] if isinstance(d, list) else d[0] for d in diffs)
    return f"{table_of(op)}: {', '.join(kinds)}"


_UNKNOWN = re.compile(r"Can't locate revision identified by '([^']+)'")


@contextlib.contextmanager
def _explained(found: History) -> Iterator[None]:
    """Alembic's errors as MigrationErrors; a revision that the folders lack gets its likely cause."""
    from alembic.util import CommandError

    try:
        yield
    except CommandError as exc:
        unknown = _UNKNOWN.search(str(exc))
        if unknown is None:
            raise MigrationError(str(exc)) from None
        folders = " and ".join(str(f) for f in found.folders)
        raise MigrationError(
            f"the database has migration {unknown.group(1)}, which is in none of {folders}: was it "
            "migrated with another app? Check RAMPART_APP and RAMPART_MIGRATIONS_DIR (and the database URL)"
        ) from None
