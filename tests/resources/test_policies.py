"""The policy helpers and the secure default (docs/guide/resources.md, "Policies"), over HTTP, as tables of
who may do what."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rampart import Field, Policy, Reference, Resource, Text
from tests.conftest import MakeUser, User
from tests.declared import Served, serve


def _named() -> dict[str, Field]:
    return {"name": Field(Text(min_length=1, max_length=50), required=True)}


# No policy at all: its owner's (and admins').
diaries = Resource(name="pol_diaries", fields=_named())
# A book is its owner's; a chapter is exactly as visible and writable as its book; a note on a chapter
# exactly as its chapter (a chain of two inherits).
books = Resource(name="pol_books", fields=_named())
chapters = Resource(
    name="pol_chapters",
    fields={**_named(), "book_id": Field(Reference("pol_books"), required=True, filter=True)},
    policy=Policy.inherit("book_id"),
)
margins = Resource(
    name="pol_margins",
    fields={**_named(), "chapter_id": Field(Reference("pol_chapters"), required=True)},
    policy=Policy.inherit("chapter_id"),
)
# Everyone reads; the owner writes.
notices = Resource(name="pol_notices", fields=_named(), policy=Policy.shared())
# Everyone reads; only admins write.
rules = Resource(name="pol_rules", fields=_named(), policy=Policy.read_only())
# Role-based: users (tasks:write) read, admins (users:manage) write.
reports = Resource(
    name="pol_reports",
    fields=_named(),
    policy=Policy.for_permissions(read="tasks:write", write="users:manage"),
)
# Role-based, where the `user` role holds neither permission.
ledgers = Resource(
    name="pol_ledgers",
    fields=_named(),
    policy=Policy.for_permissions(read="users:manage", write="users:manage"),
)
# Admins only.
secrets_ = Resource(name="pol_secrets", fields=_named(), policy=Policy.admin_only())
# A shared book whose chapters inherit: readable by all, writable by the book's owner.
shared_books = Resource(name="pol_shared_books", fields=_named(), policy=Policy.shared())
shared_chapters = Resource(
    name="pol_shared_chapters",
    fields={**_named(), "book_id": Field(Reference("pol_shared_books"), required=True)},
    policy=Policy.inherit("book_id"),
)


@pytest.fixture(scope="module")
async def served(database_url: str) -> AsyncIterator[Served]:
    resources = [
        diaries,
        books,
        chapters,
        margins,
        notices,
        rules,
        reports,
        ledgers,
        secrets_,
        shared_books,
        shared_chapters,
    ]
    async with serve(database_url, resources) as running:
        yield running


async def _make(served: Served, path: str, who: User, **fields: str) -> str:
    r = await served.client.post(f"/api/v1/{path}", json={"name": "x", **fields}, headers=who.headers)
    assert r.status_code == 201, r.text
    item_id: str = r.json()["data"]["id"]
    return item_id


async def _can(served: Served, path: str, item_id: str, who: User) -> tuple[int, int, bool, int, int]:
    """(GET status, PATCH status, listed?, DELETE status after all) for `who` on one row."""
    c = served.client
    get = (await c.get(f"/api/v1/{path}/{item_id}", headers=who.headers)).status_code
    listed = await c.get(f"/api/v1/{path}?limit=100", headers=who.headers)
    seen = listed.status_code == 200 and any(i["id"] == item_id for i in listed.json()["data"])
    patch = (await c.patch(f"/api/v1/{path}/{item_id}", json={"name": "y"}, headers=who.headers)).status_code
    create = (await c.post(f"/api/v1/{path}", json={"name": "z"}, headers=who.headers)).status_code
    return get, patch, seen, create, 0


@pytest.mark.parametrize(
    ("path", "owner_sees", "stranger", "admin"),
    [
        # (GET, PATCH, listed, POST) for a stranger and an admin on a row the owner made
        ("pol_diaries", True, (404, 404, False, 201), (200, 200, True, 201)),
        ("pol_notices", True, (200, 403, True, 201), (200, 200, True, 201)),
        ("pol_rules", False, (200, 403, True, 403), (200, 200, True, 201)),
        ("pol_reports", False, (200, 403, True, 403), (200, 200, True, 201)),
        ("pol_secrets", False, (404, 404, False, 403), (200, 200, True, 201)),
    ],
)
async def test_who_may_do_what(
    served: Served,
    make_user: MakeUser,
    path: str,
    owner_sees: bool,
    stranger: tuple[int, int, bool, int],
    admin: tuple[int, int, bool, int],
) -> None:
    owner, other, boss = await make_user(), await make_user(), await make_user("admin")
    maker = owner if owner_sees else boss  # the write-restricted ones are seeded by an admin
    item = await _make(served, path, maker)
    assert (await _can(served, path, item, other))[:4] == stranger
    assert (await _can(served, path, item, boss))[:4] == admin
    if owner_sees:
        assert (await _can(served, path, item, owner))[:4] == (200, 200, True, 201)


async def test_a_resource_without_a_policy_deletes_only_for_its_owner(
    served: Served, make_user: MakeUser
) -> None:
    owner, other = await make_user(), await make_user()
    item = await _make(served, "pol_diaries", owner)
    assert (
        await served.client.delete(f"/api/v1/pol_diaries/{item}", headers=other.headers)
    ).status_code == 404
    assert (
        await served.client.delete(f"/api/v1/pol_diaries/{item}", headers=owner.headers)
    ).status_code == 204


async def test_inherit_follows_the_referenced_row(served: Served, make_user: MakeUser) -> None:
    owner, other, boss = await make_user(), await make_user(), await make_user("admin")
    book = await _make(served, "pol_books", owner)
    chapter = await _make(served, "pol_chapters", owner, book_id=book)
    margin = await _make(served, "pol_margins", owner, chapter_id=chapter)
    c = served.client
    for path, item in (("pol_chapters", chapter), ("pol_margins", margin)):
        assert (await c.get(f"/api/v1/{path}/{item}", headers=owner.headers)).status_code == 200
        assert (await c.get(f"/api/v1/{path}/{item}", headers=other.headers)).status_code == 404
        assert (await c.get(f"/api/v1/{path}/{item}", headers=boss.headers)).status_code == 200
        listed = (await c.get(f"/api/v1/{path}", headers=other.headers)).json()["data"]
        assert item not in {i["id"] for i in listed}
        r = await c.patch(f"/api/v1/{path}/{item}", json={"name": "theirs"}, headers=other.headers)
        assert r.status_code == 404
    # Creating a child needs the parent writable: another's book is reported as if it did not exist.
    r = await c.post("/api/v1/pol_chapters", json={"name": "x", "book_id": book}, headers=other.headers)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "book_id"
    assert r.json()["errors"][0]["code"] == "not_found"
    r = await c.post("/api/v1/pol_margins", json={"name": "x", "chapter_id": chapter}, headers=other.headers)
    assert r.status_code == 422
    # The owner of the book writes its chapters, whoever made them; an admin too.
    chapter_by_admin = await _make(served, "pol_chapters", boss, book_id=book)
    r = await c.patch(
        f"/api/v1/pol_chapters/{chapter_by_admin}", json={"name": "mine"}, headers=owner.headers
    )
    assert r.status_code == 200
    # Deleting the book removes its chapters and their notes (ON DELETE CASCADE, with their events).
    served.events.clear()
    assert (await c.delete(f"/api/v1/pol_books/{book}", headers=owner.headers)).status_code == 204
    assert (await c.get(f"/api/v1/pol_chapters/{chapter}", headers=owner.headers)).status_code == 404
    assert sorted(served.fired()) == sorted(
        ["pol_margins.deleted", "pol_chapters.deleted", "pol_chapters.deleted", "pol_books.deleted"]
    )


async def test_inherit_from_a_shared_row_reads_but_does_not_write(
    served: Served, make_user: MakeUser
) -> None:
    owner, reader = await make_user(), await make_user()
    book = await _make(served, "pol_shared_books", owner)
    chapter = await _make(served, "pol_shared_chapters", owner, book_id=book)
    c = served.client
    assert (await c.get(f"/api/v1/pol_shared_chapters/{chapter}", headers=reader.headers)).status_code == 200
    r = await c.patch(f"/api/v1/pol_shared_chapters/{chapter}", json={"name": "n"}, headers=reader.headers)
    assert r.status_code == 403  # visible, not writable
    assert (
        await c.delete(f"/api/v1/pol_shared_chapters/{chapter}", headers=reader.headers)
    ).status_code == 403
    r = await c.post(
        "/api/v1/pol_shared_chapters", json={"name": "x", "book_id": book}, headers=reader.headers
    )
    assert r.status_code == 422  # may not add to a book one cannot write


def test_declarations_that_cannot_work_are_refused_when_made() -> None:
    with pytest.raises(ValueError, match="must name a Reference field"):
        Resource(name="pol_bad", fields=_named(), policy=Policy.inherit("name"))
    from rampart.resources.spec import Registry, check_references

    loop_a = Resource(
        name="pol_loop_a",
        fields={"b_id": Field(Reference("pol_loop_b"), nullable=True)},
        policy=Policy.inherit("b_id"),
    )
    loop_b = Resource(
        name="pol_loop_b",
        fields={"a_id": Field(Reference("pol_loop_a"), nullable=True)},
        policy=Policy.inherit("a_id"),
    )
    registry = Registry()
    for resource in (Resource(name="users", fields={}, owner_field=None), loop_a, loop_b):
        registry.add(resource)
    with pytest.raises(ValueError, match="cycle"):
        check_references(registry)
    orphan = Registry()
    orphan.add(Resource(name="users", fields={}, owner_field=None))
    orphan.add(chapters)
    with pytest.raises(ValueError, match="not declared"):
        check_references(orphan)


async def test_without_the_read_permission_nothing_of_a_resource_shows_anywhere(
    served: Served, make_user: MakeUser
) -> None:
    """403 on the routes, and no row through the other ways rows are read: the audit log, references."""
    boss, user = await make_user("admin"), await make_user()
    ledger = await _make(served, "pol_ledgers", boss)
    c = served.client
    assert (await c.get(f"/api/v1/pol_ledgers/{ledger}", headers=user.headers)).status_code == 403
    assert (await c.get("/api/v1/pol_ledgers", headers=user.headers)).status_code == 403
    r = await c.get("/api/v1/events", params={"resource": "pol_ledgers"}, headers=user.headers)
    assert r.status_code == 200
    assert r.json()["data"] == []
    r = await c.get("/api/v1/events", params={"resource": "pol_ledgers"}, headers=boss.headers)
    assert ledger in {e["resource_id"] for e in r.json()["data"]}


async def test_inherit_keeps_a_deleted_childs_history_for_whoever_saw_its_parent(
    served: Served, make_user: MakeUser
) -> None:
    """The events of a child deleted with its parent stay in the audit log of those who could see the
    parent, and of nobody else (a comments-on-tasks rule written by hand lost them)."""
    owner, other = await make_user(), await make_user()
    book = await _make(served, "pol_books", owner)
    chapter = await _make(served, "pol_chapters", owner, book_id=book)
    margin = await _make(served, "pol_margins", owner, chapter_id=chapter)
    c = served.client
    assert (await c.delete(f"/api/v1/pol_books/{book}", headers=owner.headers)).status_code == 204

    async def history(who: User, resource: str, item: str) -> list[str]:
        r = await c.get(
            "/api/v1/events", params={"resource": resource, "resource_id": item}, headers=who.headers
        )
        assert r.status_code == 200, r.text
        return [e["type"] for e in r.json()["data"]]

    assert await history(owner, "pol_chapters", chapter) == ["pol_chapters.created", "pol_chapters.deleted"]
    assert await history(owner, "pol_margins", margin) == ["pol_margins.created", "pol_margins.deleted"]
    assert await history(other, "pol_chapters", chapter) == []
    assert await history(other, "pol_margins", margin) == []
