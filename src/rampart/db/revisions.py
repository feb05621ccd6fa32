"""The revision graph of migration folders, read from the version files' literals.

Rampart's own revisions form one chain and an app's form another, each in its own folder (decision
0020). Serving workers ask this graph which heads are applied, for /health/ready: importing Alembic (and
SQLAlchemy, Mako) for it cost a worker ~22 MB of RSS for the rest of its life. A folder holding a file
whose ids are not plain literals is read through Alembic instead.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Revision:
    id: str
    folder: Path
    down: tuple[str, ...]  # the revisions it builds on
    depends_on: tuple[str, ...]  # revisions of another chain that must be applied first


@dataclass(frozen=True, slots=True)
class History:
    """Every revision of the given folders."""

    folders: tuple[Path, ...]
    revisions: dict[str, Revision]

    def heads(self) -> frozenset[str]:
        """The revisions nothing builds on: what `upgrade heads` brings the database to."""
        built_on = {parent for r in self.revisions.values() for parent in r.down}
        return frozenset(self.revisions.keys() - built_on)

    def folder_heads(self, folder: Path) -> list[str]:
        """The revisions of `folder` that no other revision of `folder` builds on: one per healthy chain."""
        mine = {r.id: r for r in self.revisions.values() if r.folder == folder}
        built_on = {parent for r in mine.values() for parent in r.down}
        return sorted(mine.keys() - built_on)

    def base(self, folder: Path) -> str:
        """The first revision of `folder`'s chain (the one that builds on nothing): what an app's chain
        depends on when `folder` is Rampart's."""
        return min(r.id for r in self.revisions.values() if r.folder == folder and not r.down)

    def applied(self, rows: Iterable[str]) -> set[str]:
        """Every revision the database holds, given its `alembic_version` rows: those and their ancestors,
        through dependencies too (Alembic leaves out a row that a dependency of another row implies)."""
        done: set[str] = set()
        todo = list(rows)
        while todo:
            current = todo.pop()
            if current in done:
                continue
            done.add(current)
            revision = self.revisions.get(current)
            if revision is not None:
                todo.extend((*revision.down, *revision.depends_on))
        return done

    def pending(self, rows: Iterable[str]) -> list[str]:
        """Heads not yet applied (empty when the database is up to date)."""
        return sorted(self.heads() - self.applied(rows))


def read_history(folders: Sequence[Path]) -> History:
    """The revisions of `folders` (a missing folder holds none)."""
    revisions: dict[str, Revision] = {}
    for folder in folders:
        found = _read_folder(folder)
        if found is None:
            return _alembic_history(folders)
        revisions.update((r.id, r) for r in found)
    known = revisions.keys()
    if any(dep not in known for r in revisions.values() for dep in r.depends_on):
        return _alembic_history(folders)  # a dependency named by branch label: Alembic resolves it
    return History(tuple(folders), revisions)


def _read_folder(folder: Path) -> list[Revision] | None:
    if not folder.is_dir():
        return []
    found: list[Revision] = []
    for path in sorted(folder.glob("*.py")):
        values = _literals(path)
        if values is None:
            return None
        revision = values.get("revision")
        if revision is None:
            continue  # not a revision (__init__.py)
        down, depends_on = _ids(values.get("down_revision")), _ids(values.get("depends_on"))
        if not isinstance(revision, str) or down is None or depends_on is None:
            return None
        found.append(Revision(revision, folder, down, depends_on))
    return found


def _literals(path: Path) -> dict[str, object] | None:
    """The module-level `revision`, `down_revision` and `depends_on` of a version file; None if one of
    them is not a literal."""
    values: dict[str, object] = {}
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in ("revision", "down_revision", "depends_on"):
            try:
                values[target.id] = ast.literal_eval(value)
            except ValueError:
                return None
    return values


def _ids(value: object) -> tuple[str, ...] | None:
    """A revision reference as a tuple of ids: None, one id, or a sequence of them."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, tuple | list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    return None


def _alembic_history(folders: Sequence[Path]) -> History:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(folders[0]), version_locations=[str(f) for f in folders])
    revisions: dict[str, Revision] = {}
    for item in script.walk_revisions():
        depends_on = []
        for dep in _ids(item.dependencies) or ():
            resolved = script.get_revision(dep)
            if resolved is not None:
                depends_on.append(resolved.revision)
        folder = Path(item.path).resolve().parent
        down = _ids(item.down_revision) or ()
        revisions[item.revision] = Revision(item.revision, folder, down, tuple(depends_on))
    return History(tuple(folders), revisions)
