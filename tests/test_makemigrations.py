"""`rampart makemigrations` for an app of one's own, as a user runs it: a small app in a temporary project
(its package and its ./migrations), real subprocesses, a fresh PostgreSQL database per test."""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rampart.db.migrate import CORE_VERSIONS, history
from tests.conftest import DEMO_MIGRATIONS
from tests.support import free_port
from tests.test_cli import (
    _drop,
    _new_database,
    applied,
    assert_clean_failure,
    cli_env,
    public_tables,
    query,
    rampart,
)

FRAMEWORK_TABLES = {
    "users", "sessions", "spent_refresh_tokens", "user_identities", "oidc_login_states", "signing_keys",
    "events", "event_queue", "event_deliveries", "webhooks", "webhook_attempts",
}  # fmt: skip
DEMO_TABLES = {"projects", "project_members", "tasks"}

APP = string.Template("""
from rampart.resources.fields import Integer, Reference, Text
from rampart.resources.spec import Field, Policy, Resource


def _own(actor, alias, bind):
    return f"{alias}.owner_id = {bind(actor.user_id)}"


def declare():
    shelves = Resource(
        name="shelves",
        fields={"name": Field(Text(min_length=1, max_length=50), required=True), $shelf_fields},
        policy=Policy(visible=_own, writable=_own),
    )
    books = Resource(
        name="books",
        fields={
            "title": Field(Text(min_length=1, max_length=50), required=True),
            "shelf_id": Field(Reference("shelves", on_delete="RESTRICT"), required=True),
        },
        policy=Policy(visible=_own, writable=_own),
    )
    return [$resources]
""")
FIRST_FIELDS = '"note": Field(Text(max_length=200), default=""), "rank": Field(Integer(), default=0)'


@dataclass
class Project:
    """A user's project: the package `shop` (RAMPART_APP=shop.resources:declare) and its database."""

    path: Path
    url: str

    @property
    def migrations(self) -> Path:
        return self.path / "migrations"

    def env(self, **overrides: str) -> dict[str, str]:
        return cli_env(
            self.url,
            RAMPART_APP="shop.resources:declare",
            PYTHONPATH=str(self.path),
            PYTHONDONTWRITEBYTECODE="1",  # the app is rewritten between runs: never a stale .pyc
            **overrides,
        )

    def declare(self, *, shelf_fields: str = FIRST_FIELDS, books: bool = True) -> None:
        package = self.path / "shop"
        package.mkdir(exist_ok=True)
        (package / "__init__.py").write_text("")
        source = APP.substitute(shelf_fields=shelf_fields, resources="shelves, books" if books else "shelves")
        (package / "resources.py").write_text(source)

    def run(self, *args: str, **env: str) -> Any:
        return rampart(*args, env=self.env(**env), cwd=self.path)

    def files(self) -> list[Path]:
        return sorted(self.migrations.glob("*.py")) if self.migrations.is_dir() else []


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    name, url = _new_database()
    made = Project(tmp_path, url)
    made.declare()
    yield made
    _drop(name)


@pytest.fixture
def installed() -> Iterator[None]:
    """Rampart's own migration folders are the same after the test as before it."""
    before = {folder: sorted(folder.glob("*.py")) for folder in (CORE_VERSIONS, DEMO_MIGRATIONS)}
    yield
    assert {folder: sorted(folder.glob("*.py")) for folder in before} == before


def core_head() -> str:
    (head,) = history().folder_heads(CORE_VERSIONS)
    return head


def core_base() -> str:
    (base,) = [r.id for r in history().revisions.values() if not r.down]
    return base


def version_file(revision: str, down: str) -> str:
    """An empty revision, as a colleague (or an older makemigrations) might have written it."""
    return (
        f"revision = {revision!r}\ndown_revision = {down!r}\nbranch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n"
    )


def migrated(project: Project) -> Path:
    """The app's first migration, written and applied."""
    result = project.run("makemigrations", "-m", "shelves and books")
    assert result.returncode == 0, result.stderr
    (first,) = project.files()
    done = project.run("migrate")
    assert done.returncode == 0, done.stderr
    return first


def test_the_first_migration_goes_into_the_projects_folder_and_makes_only_its_tables(
    project: Project, installed: None
) -> None:
    # Tables that are neither Rampart's nor the app's: the demo's (as an older Rampart left them) and a
    # table made by hand. Nothing may drop them.
    query(project.url, "CREATE TABLE projects (id uuid PRIMARY KEY)")
    query(project.url, "CREATE TABLE ledger (id int PRIMARY KEY)")
    first = migrated(project)

    text = first.read_text()
    upgrade = text.partition("def downgrade")[0]
    assert "op.create_table('shelves'" in upgrade
    assert "op.create_table('books'" in upgrade
    assert "drop" not in upgrade
    assert "branch_labels: str | Sequence[str] | None = ('app',)" in text
    assert f"depends_on: str | Sequence[str] | None = {core_base()!r}" in text
    assert "down_revision: str | Sequence[str] | None = None" in text

    tables = public_tables(project.url)
    assert tables >= FRAMEWORK_TABLES | {"shelves", "books", "projects", "ledger"}
    assert not tables & (DEMO_TABLES - {"projects"})  # the demo's chain did not run
    assert applied(project.url) == {core_head(), first.name.partition("_")[0]}

    again = project.run("makemigrations", "-m", "nothing")
    assert again.returncode == 0, again.stderr
    assert "No changes" in again.stderr
    assert project.files() == [first]


def test_a_drop_is_refused_unless_allowed(project: Project, installed: None) -> None:
    first = migrated(project)
    project.declare(shelf_fields='"rank": Field(Integer(), default=0)', books=False)  # books and note go

    refused = project.run("makemigrations", "-m", "fewer")
    assert_clean_failure(refused, "--allow-destructive", "table books", "column shelves.note")
    assert project.files() == [first]

    allowed = project.run("makemigrations", "-m", "fewer", "--allow-destructive")
    assert allowed.returncode == 0, allowed.stderr
    assert "this migration drops" in allowed.stderr
    (second,) = set(project.files()) - {first}
    assert "op.drop_table('books')" in second.read_text()
    assert project.run("migrate").returncode == 0
    assert "books" not in public_tables(project.url)
    assert {r["column_name"] for r in query(project.url, SHELF_COLUMNS)} == {
        "id", "name", "rank", "owner_id", "created_at", "updated_at", "version",
    }  # fmt: skip


SHELF_COLUMNS = "SELECT column_name FROM information_schema.columns WHERE table_name = 'shelves'"


def test_an_empty_revision_to_write_by_hand(project: Project) -> None:
    first = migrated(project)
    result = project.run("makemigrations", "--empty", "-m", "rename a column")
    assert result.returncode == 0, result.stderr
    (second,) = set(project.files()) - {first}
    text = second.read_text()
    assert f"down_revision: str | Sequence[str] | None = {first.name.partition('_')[0]!r}" in text
    assert "def upgrade() -> None:\n    pass" in text


def test_changes_that_lock_a_busy_table_are_written_with_the_safe_recipe(project: Project) -> None:
    first = migrated(project)
    # `code`: NOT NULL without a default, and indexed; `rank`: from integer to text.
    project.declare(
        shelf_fields='"rank": Field(Text(max_length=10), default=""), '
        '"note": Field(Text(max_length=200), default=""), '
        '"code": Field(Text(max_length=9), required=True, index=True)'
    )
    result = project.run("makemigrations", "-m", "code")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("rampart: warning:")]
    # The table's three, and the two that apply to its record of deleted rows (same columns, same indexes).
    assert len(warnings) == 5, result.stderr
    assert "adds shelves.code NOT NULL without a default" in result.stderr
    assert "changes the type of shelves.rank" in result.stderr
    assert "creates index shelves_code_idx on shelves" in result.stderr
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS shelves_code_idx" in result.stderr
    assert "changes the type of shelves_deleted.rank" in result.stderr
    assert "creates index shelves_deleted_code_idx on shelves_deleted" in result.stderr
    assert result.stderr.count("Safe on a busy table:") == 5
    (second,) = set(project.files()) - {first}
    # The index step finds an index built beforehand with CONCURRENTLY, as the recipe says.
    assert "if_not_exists=True" in second.read_text()


def test_a_new_table_is_not_warned_about(project: Project) -> None:
    result = project.run("makemigrations", "-m", "shelves and books")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr


@pytest.mark.parametrize("where", ["rampart's versions", "site-packages"])
def test_it_refuses_to_write_into_the_installed_package(
    project: Project, installed: None, where: str
) -> None:
    folder = CORE_VERSIONS if where != "site-packages" else project.path / "lib/site-packages/shop/migrations"
    result = project.run("makemigrations", "-m", "x", RAMPART_MIGRATIONS_DIR=str(folder))
    assert_clean_failure(result, "refusing to write into", str(folder), "RAMPART_MIGRATIONS_DIR")
    assert not (project.path / "lib").exists()


def test_without_rampart_app_the_apps_database_is_left_alone(project: Project, installed: None) -> None:
    """The demo app (the default) does not know the app's migrations: nothing runs, nothing is written,
    and the app's tables stay (before, a `drop_table` of them went into Rampart's own folder)."""
    migrated(project)
    env = project.env()
    del env["RAMPART_APP"]
    for command in (["makemigrations", "-m", "oops"], ["migrate"]):
        result = rampart(*command, env=env, cwd=project.path)
        assert_clean_failure(result, "RAMPART_APP", "was it migrated with another app?")
    assert public_tables(project.url) >= {"shelves", "books"}


def test_diverged_heads_are_merged_by_a_command(project: Project) -> None:
    first = migrated(project)
    parent = first.name.partition("_")[0]
    # Two colleagues each added a step on top of the first, on their own branches, then both were merged.
    mine, theirs = (project.migrations / f"{r}_step.py" for r in ("a0a0a0a0a0a0", "b0b0b0b0b0b0"))
    mine.write_text(version_file("a0a0a0a0a0a0", parent))
    theirs.write_text(version_file("b0b0b0b0b0b0", parent))
    project.declare(shelf_fields=FIRST_FIELDS + ', "extra": Field(Text(max_length=5), nullable=True)')
    grown = project.run("makemigrations", "-m", "extra", "--allow-destructive")
    assert_clean_failure(grown, "have diverged", "rampart makemigrations --merge")
    for command in (["migrate"], ["serve", "--port", str(free_port())]):
        result = project.run(*command)
        assert_clean_failure(result, "have diverged", "rampart makemigrations --merge")
        assert len([line for line in result.stderr.splitlines() if line.startswith("Error:")]) == 1

    merged = project.run("makemigrations", "--merge")
    assert merged.returncode == 0, merged.stderr
    (merge,) = set(project.files()) - {first, mine, theirs}
    assert "down_revision: str | Sequence[str] | None = ('a0a0a0a0a0a0', 'b0b0b0b0b0b0')" in merge.read_text()
    assert project.run("migrate").returncode == 0
    assert applied(project.url) == {core_head(), merge.name.partition("_")[0]}
    nothing = project.run("makemigrations", "--merge")
    assert nothing.returncode == 0
    assert "Nothing to merge" in nothing.stderr


def test_an_app_chain_built_on_an_older_rampart_revision_keeps_working(project: Project) -> None:
    """What an older `makemigrations` wrote (with RAMPART_MIGRATIONS_DIR): the app's first revision on top
    of Rampart's head of the day. Once Rampart moved on, makemigrations failed with "Multiple heads"."""
    project.migrations.mkdir()
    older = history().revisions["86270a25deee"].down[0]  # a core revision that has a successor now
    (project.migrations / "01d01d01d01d_start.py").write_text(version_file("01d01d01d01d", older))
    result = project.run("makemigrations", "-m", "shelves and books")
    assert result.returncode == 0, result.stderr
    (new,) = [p for p in project.files() if not p.name.startswith("01d")]
    assert "down_revision: str | Sequence[str] | None = '01d01d01d01d'" in new.read_text()
    assert project.run("migrate").returncode == 0
    assert applied(project.url) == {core_head(), new.name.partition("_")[0]}


EXTENDS_THE_DEMO = """
from rampart.apps.tasks import resources as demo
from rampart.resources.fields import Reference, Text
from rampart.resources.spec import Field, Parent, Resource

comments = Resource(
    name="comments",
    parent=Parent(resource="tasks", field="task_id"),
    fields={
        "task_id": Field(Reference("tasks"), read_only=True),
        "body": Field(Text(min_length=1, max_length=2000), required=True),
    },
)


def declare():
    return [*demo.declare(), comments]
"""


@pytest.mark.parametrize("start", ["demo migrated", "empty"])
def test_an_app_that_extends_the_demo_builds_on_the_demos_chain(
    project: Project, installed: None, start: str
) -> None:
    """The guide's worked example: the demo's resources plus comments on tasks. The demo's chain stays the
    demo's; the app's own folder gets only the comments."""
    if start == "demo migrated":  # `make run` first, with the demo alone
        env = project.env()
        del env["RAMPART_APP"]
        assert rampart("migrate", env=env, cwd=project.path).returncode == 0
    (project.path / "shop" / "resources.py").write_text(EXTENDS_THE_DEMO)

    result = project.run("makemigrations", "-m", "comments")
    assert result.returncode == 0, result.stderr
    (first,) = project.files()
    upgrade = first.read_text().partition("def downgrade")[0]
    assert "op.create_table('comments'" in upgrade
    assert upgrade.count("op.create_table(") == 2  # comments and its record of deleted rows
    assert project.run("migrate").returncode == 0
    assert public_tables(project.url) >= DEMO_TABLES | {"comments", "comments_deleted"}
    (demo_head,) = history([DEMO_MIGRATIONS]).folder_heads(DEMO_MIGRATIONS)
    assert applied(project.url) == {core_head(), demo_head, first.name.partition("_")[0]}
    again = project.run("makemigrations", "-m", "nothing")
    assert "No changes" in again.stderr
