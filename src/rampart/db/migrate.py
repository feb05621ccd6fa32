"""Running Alembic migrations under a PostgreSQL advisory lock, and reporting pending ones.

Several instances starting at once all call `upgrade`; the lock makes one of them migrate and the others
find nothing left to do.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import TYPE_CHECKING

from rampart.db.pool import Database

if TYPE_CHECKING:  # Alembic is loaded only when migrating, never in a serving worker
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
ADVISORY_LOCK_KEY = 7_272_740_001


def sqlalchemy_url(dsn: str) -> str:
    """The SQLAlchemy (asyncpg dialect) form of a libpq-style DSN."""
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+asyncpg://" + dsn[len(prefix) :]
    return dsn


def alembic_config(dsn: str | None = None, *, versions_dir: str | None = None) -> Config:
    """Alembic settings: Rampart's own versions, plus an app's `versions_dir` when it keeps its own."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if versions_dir:
        config.set_main_option("version_locations", f"{MIGRATIONS_DIR / 'versions'} {versions_dir}")
        config.set_main_option("path_separator", "space")
    if dsn is not None:
        # '%' must be doubled for configparser interpolation.
        config.set_main_option("sqlalchemy.url", sqlalchemy_url(dsn).replace("%", "%%"))
    return config


def upgrade(dsn: str, revision: str = "heads", *, versions_dir: str | None = None) -> None:
    from alembic import command

    command.upgrade(alembic_config(dsn, versions_dir=versions_dir), revision)


def make_migration(dsn: str, message: str, *, versions_dir: str | None = None) -> None:
    """Autogenerate a revision from the declarations; into `versions_dir` when the app keeps its own."""
    if versions_dir:
        Path(versions_dir).mkdir(parents=True, exist_ok=True)
    from alembic import command

    command.revision(
        alembic_config(dsn, versions_dir=versions_dir),
        message=message,
        autogenerate=True,
        version_path=versions_dir,
    )


@functools.cache
def _heads(versions_dir: str | None) -> frozenset[str]:
    """The revisions no other revision builds on, read from the version files' literals.

    Serving workers ask this for /health/ready: importing Alembic (and SQLAlchemy, Mako) for it cost a
    worker ~22 MB of RSS for the rest of its life. A file whose revision ids are not plain literals is
    left to Alembic itself.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    dirs = [MIGRATIONS_DIR / "versions", *([Path(versions_dir)] if versions_dir else [])]
    for path in sorted(p for d in dirs if d.is_dir() for p in d.glob("*.py")):
        found = _revision_ids(path)
        if found is None:
            return _alembic_heads(versions_dir)
        if found:
            revision, down = found
            revisions.add(revision)
            parents.update(down)
    return frozenset(revisions - parents)


def _revision_ids(path: Path) -> tuple[str, tuple[str, ...]] | tuple[()] | None:
    """(revision, down revisions) of a version file; () for a file that is not one; None if not literal."""
    values: dict[str, object] = {}
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        target: ast.expr
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
            try:
                values[target.id] = ast.literal_eval(value)
            except ValueError:
                return None
    revision, down = values.get("revision"), values.get("down_revision")
    if revision is None:
        return ()
    parents = (down,) if isinstance(down, str) else down or ()
    if not isinstance(revision, str) or not isinstance(parents, tuple | list):
        return None
    if not all(isinstance(parent, str) for parent in parents):
        return None
    return revision, tuple(parents)


def _alembic_heads(versions_dir: str | None) -> frozenset[str]:
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(alembic_config(versions_dir=versions_dir)).get_heads())


async def pending_migrations(db: Database, *, versions_dir: str | None = None) -> list[str]:
    """Heads not yet applied to the database (empty when up to date)."""
    exists = await db.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
    applied = set()
    if exists:
        applied = {r["version_num"] for r in await db.fetch("SELECT version_num FROM alembic_version")}
    return sorted(_heads(versions_dir) - applied)
