"""`rampart init NAME`: a project of one's own on Rampart, ready to run and to test.

It writes `./NAME` with a package `NAME` holding one example resource and the app built from it, the
app's first migration (rendered from the declaration, so `makemigrations` finds nothing left to do), a
`.env` for development, tests written with `rampart.testing`, a README, and a Makefile with the same two
commands as Rampart itself: `make run` and `make test`. See docs/guide/build-your-app.md.
"""

from __future__ import annotations

import json
import keyword
import re
import secrets
import sys
import uuid
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rampart.resources.spec import Resource

# The files of a new project: `@@name@@`, `@@requirement@@` and `@@secret@@` are filled in, and a folder
# called `__name__` takes the project's name.
TEMPLATE = Path(__file__).resolve().parent / "template"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
# Names a project's package may not take: they would shadow what it imports.
_TAKEN = {"rampart", "tests", "test", "migrations", "alembic", "sqlalchemy", "starlette", "pytest", "asyncpg"}


class ScaffoldError(Exception):
    """The project cannot be made (its name, or a folder already there); the message says why."""


def check_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name) or keyword.iskeyword(name):
        raise ScaffoldError(
            f"{name!r} is not a usable project name: lower-case letters, digits and _, starting with a letter"
        )
    if name in _TAKEN or name in sys.stdlib_module_names:
        raise ScaffoldError(f"{name!r} would shadow a module the project imports: choose another name")


def rampart_requirement() -> str:
    """How the project's pyproject.toml names Rampart: the very checkout or file this one was installed
    from when it was (a source checkout, a wheel on disk), else the release by its version."""
    distribution = metadata.distribution("rampart")
    direct = distribution.read_text("direct_url.json")
    if direct:
        url = json.loads(direct).get("url", "")
        if url.startswith("file://"):
            return f"rampart @ {url}"
    return f"rampart=={distribution.version}"


def initial_revision(resources: list[Resource]) -> tuple[str, str]:
    """The app's first migration (its text, its revision id): the tables of `resources` and their records
    of deleted rows, as `rampart makemigrations` would write them for a new app, rendered without a
    database."""
    import sqlalchemy as sa
    from alembic.autogenerate import render_python_code
    from alembic.operations import ops

    from rampart.db.migrate import CORE_VERSIONS, history
    from rampart.resources.tables import define_deleted_table, define_table

    schema = sa.MetaData()
    sa.Table("users", schema, sa.Column("id", sa.UUID(), primary_key=True))  # Rampart's, referenced
    names = {"users": "users", **{r.name: r.table for r in resources}}
    tables = [define_table(r, schema, tables=names) for r in resources]
    tables += [define_deleted_table(r, schema) for r in resources]
    upgrade = ops.UpgradeOps(
        ops=[
            op
            for table in tables
            for op in (
                ops.CreateTableOp.from_table(table),
                *(ops.CreateIndexOp.from_index(index) for index in sorted(table.indexes, key=str)),
            )
        ]
    )
    downgrade = ops.DowngradeOps(ops=[ops.DropTableOp.from_table(table) for table in reversed(tables)])
    revision = uuid.uuid4().hex[:12]
    return _INITIAL_REVISION.format(
        revision=revision,
        created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        core=history().base(CORE_VERSIONS),
        upgrade=_body(render_python_code(upgrade)),
        downgrade=_body(render_python_code(downgrade)),
    ), revision


def _body(code: str) -> str:
    """Alembic's rendered operations as a function body: its banner comments dropped, indented."""
    lines = [line.strip("\n") for line in code.splitlines() if not line.strip().startswith("# ###")]
    return "\n".join(line if line.startswith("    ") else "    " + line for line in lines if line.strip())


def create_project(name: str, parent: Path) -> Path:
    """Write the project `parent/name`; returns its folder."""
    check_name(name)
    root = parent / name
    if root.exists():
        raise ScaffoldError(f"{root} already exists: choose another name or remove it")
    from rampart.resources.fields import Boolean, Text
    from rampart.resources.spec import Field, Resource

    # The example resource, declared here exactly as template/__name__/resources.py.tmpl writes it.
    example = Resource(
        name="notes",
        fields={
            "title": Field(
                Text(min_length=1, max_length=200), required=True, filter=("eq", "contains"), sort=True
            ),
            "body": Field(Text(max_length=10_000), default=""),
            "pinned": Field(Boolean(), default=False, filter=True),
        },
    )
    migration, revision = initial_revision([example])
    values = {"name": name, "requirement": rampart_requirement(), "secret": secrets.token_urlsafe(48)}
    for template in sorted(TEMPLATE.rglob("*.tmpl")):
        relative = template.relative_to(TEMPLATE).with_suffix("")  # `app.py.tmpl` -> `app.py`
        target = root / str(relative).replace("__name__", name)
        text = template.read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace(f"@@{key}@@", value)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    (root / "migrations" / f"{revision}_notes.py").write_text(migration, encoding="utf-8")
    (root / ".env").chmod(0o600)  # it holds the development signing secret
    return root


_INITIAL_REVISION = '''"""notes: the example resource of a new project (written by `rampart init`)

Revision ID: {revision}
Revises:
Create Date: {created}
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "{revision}"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("app",)
# Rampart's first revision makes `users`, which these tables reference.
depends_on: str | Sequence[str] | None = "{core}"


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''
