"""A test-only app whose reference is declared ON DELETE RESTRICT (the demo app's all cascade)."""

from __future__ import annotations

from typing import Any

from rampart.resources.fields import Reference, Text
from rampart.resources.spec import Field, Policy, Resource

CREATE_TABLES = """
CREATE TABLE IF NOT EXISTS shelves (
    id uuid PRIMARY KEY, name text NOT NULL, owner_id uuid NOT NULL REFERENCES users (id),
    created_at timestamptz(3) NOT NULL DEFAULT now(), updated_at timestamptz(3) NOT NULL DEFAULT now(),
    version integer NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS books (
    id uuid PRIMARY KEY, title text NOT NULL,
    shelf_id uuid NOT NULL REFERENCES shelves (id) ON DELETE RESTRICT,

    owner_id uuid NOT NULL REFERENCES users (id),
    created_at timestamptz(3) NOT NULL DEFAULT now(), updated_at timestamptz(3) NOT NULL DEFAULT now(),
    version integer NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS shelves_deleted (LIKE shelves, deleted_at timestamptz(3) NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS books_deleted (LIKE books, deleted_at timestamptz(3) NOT NULL DEFAULT now())
"""


def _own(actor: Any, alias: str, bind: Any) -> str:
    return f"{alias}.owner_id = {bind(actor.user_id)}"


def declare() -> list[Resource]:
    shelves = Resource(
        name="shelves",
        fields={"name": Field(Text(min_length=1, max_length=50), required=True)},
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
    return [shelves, books]
