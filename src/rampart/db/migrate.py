"""Running Alembic migrations under a PostgreSQL advisory lock, and reporting pending ones.

A chain of revisions per folder (decision 0020): Rampart's own (`rampart/migrations/versions`, branch
label `rampart`), then the app's folders in the order they apply: the chains of the apps it builds on
(the demo's, for an app that extends it), then its own (`RAMPART_MIGRATIONS_DIR`). An app's chain starts
from nothing and depends on Rampart's first revision. Upgrading brings each chain to its head in that
order, so an app's revision always finds the tables it builds on as the installed versions make them.
Several instances starting at once all call `upgrade`; the lock makes one of them migrate and the others
find nothing left to do.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rampart.db.pool import Database
from rampart.db.revisions import History, read_history

if TYPE_CHECKING:  # Alembic is loaded only when migrating, never in a serving worker
    from alembic.config import Config

Folders = Sequence[str | Path]  # an app's migration folders, in the order their chains apply

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
CORE_VERSIONS = MIGRATIONS_DIR / "versions"
ADVISORY_LOCK_KEY = 7_272_740_001


class MigrationError(Exception):
    """A migration Rampart will not run or write, said in one line with what to do instead."""


def sqlalchemy_url(dsn: str) -> str:
    """The SQLAlchemy (asyncpg dialect) form of a libpq-style DSN."""
    return re.sub(r"^postgres(?:ql)?://", "postgresql+asyncpg://", dsn)


def version_folders(app_folders: Folders = ()) -> tuple[Path, ...]:
    """Rampart's versions folder, then the app's, resolved, each once."""
    if isinstance(app_folders, str | Path):  # one folder (a str is a sequence too: not of folders)
        app_folders = (app_folders,)
    found = [CORE_VERSIONS]
    for folder in app_folders:
        resolved = Path(folder).resolve()
        if resolved not in found:
            found.append(resolved)
    return tuple(found)


def alembic_config(dsn: str | None = None, *, app_folders: Folders = ()) -> Config:
    """Alembic settings: Rampart's own versions, plus the app's folders."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' must be doubled for configparser interpolation; one folder per line, so paths may hold spaces.
    folders = "\n".join(str(folder) for folder in version_folders(app_folders))
    config.set_main_option("version_locations", folders.replace("%", "%%"))
    config.set_main_option("path_separator", "newline")
    if dsn is not None:
        config.set_main_option("sqlalchemy.url", sqlalchemy_url(dsn).replace("%", "%%"))
    return config


def history(app_folders: Folders = ()) -> History:
    return read_history(version_folders(app_folders))


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


def upgrade(dsn: str, *, app_folders: Folders = ()) -> None:
    """Apply every pending revision, chain by chain: Rampart's, then each of the app's folders in order."""
    from alembic import command

    found = history(app_folders)
    check_heads(found)
    config = alembic_config(dsn, app_folders=app_folders)
    with explained(found):
        for folder in found.folders:
            # A no-op when the head is applied, or is an ancestor of what is (an app's revision built on it).
            for head in found.folder_heads(folder):
                command.upgrade(config, head)


_cached_history = functools.cache(read_history)  # the version files do not change while serving


async def pending_migrations(db: Database, *, app_folders: Folders = ()) -> list[str]:
    """Heads not yet applied to the database (empty when up to date). Read from the version files once."""
    rows: list[str] = []
    if await db.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL"):
        rows = [r["version_num"] for r in await db.fetch("SELECT version_num FROM alembic_version")]
    return _cached_history(version_folders(app_folders)).pending(rows)


_UNKNOWN = re.compile(r"Can't locate revision identified by '([^']+)'")


@contextlib.contextmanager
def explained(found: History) -> Iterator[None]:
    """Alembic's errors as MigrationErrors; a revision that the folders lack gets its likely cause."""
    from alembic.util import CommandError

    try:
        yield
    except CommandError as exc:
        unknown = _UNKNOWN.search(str(exc))
        if unknown is None:
            raise MigrationError(str(exc)) from None
        folders = ", ".join(str(f) for f in found.folders)
        raise MigrationError(
            f"the database has migration {unknown.group(1)}, which is in none of {folders}: was it "
            "migrated with another app? Check RAMPART_APP and RAMPART_MIGRATIONS_DIR (and the database URL)"
        ) from None
