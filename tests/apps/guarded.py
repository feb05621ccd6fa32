"""A test-only app whose one resource needs a permission to be read (`Policy.read_permission`)."""

from __future__ import annotations

from typing import Any

from rampart.resources.fields import Text
from rampart.resources.spec import Field, Policy, Resource

READ = "shelves:read"


def _own(actor: Any, alias: str, bind: Any) -> str:
    return f"{alias}.owner_id = {bind(actor.user_id)}"


def declare() -> list[Resource]:
    return [
        Resource(
            name="shelves",
            fields={"name": Field(Text(min_length=1, max_length=50), required=True)},
            policy=Policy(visible=_own, writable=_own, read_permission=READ),
        )
    ]
