"""Running Alembic migrations under a PostgreSQL advisory lock, and reporting pending ones.

Several instances starting at once all call `upgrade`; the lock makes one of them migrate and the others
find nothing left to do.
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from rampart.db.pool import Database

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
ADVISORY_LOCK_KEY = 7_272_740_001


def sqlalchemy_url(dsn: str) -> str:
    """The SQLAlchemy (asyncpg dialect) form of a libpq-style DSN."""
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+asyncpg://" + dsn[len(prefix) :]
    return dsn


def alembic_config(dsn: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' must be doubled for configparser interpolation.
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(dsn).replace("%", "%%"))
    return config


def upgrade(dsn: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(dsn), revision)


def make_migration(dsn: str, message: str) -> None:
    command.revision(alembic_config(dsn), message=message, autogenerate=True)


@functools.cache
def _heads() -> frozenset[str]:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


async def pending_migrations(db: Database) -> list[str]:
    """Heads not yet applied to the database (empty when up to date)."""
    exists = await db.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
    applied = set()
    if exists:
        applied = {r["version_num"] for r in await db.fetch("SELECT version_num FROM alembic_version")}
    return sorted(_heads() - applied)
