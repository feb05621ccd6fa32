"""Running Alembic migrations under a PostgreSQL advisory lock, and reporting pending ones.

Several instances starting at once all call `upgrade`; the lock makes one of them migrate and the others
find nothing left to do.
"""

from __future__ import annotations

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
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(alembic_config(versions_dir=versions_dir)).get_heads())


async def pending_migrations(db: Database, *, versions_dir: str | None = None) -> list[str]:
    """Heads not yet applied to the database (empty when up to date)."""
    exists = await db.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
    applied = set()
    if exists:
        applied = {r["version_num"] for r in await db.fetch("SELECT version_num FROM alembic_version")}
    return sorted(_heads(versions_dir) - applied)
