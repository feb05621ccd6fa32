"""Row predicates for the common access rules, to use in a `Policy` or combine with your own.

A predicate takes the caller, the alias of the table in the query and a binder, and returns a SQL
condition (values bound, never inlined) or None for "every row" (see `rampart.resources.spec.Predicate`).
`Policy.owner()`, `Policy.shared()`, `Policy.read_only()` and the others are built from these.
"""

from __future__ import annotations

from rampart.access.actor import Actor
from rampart.resources.placement import Alias
from rampart.resources.spec import Binder, Predicate


def owned_by(field: str = "owner_id") -> Predicate:
    """Rows whose `field` is the caller's user id."""

    def owned(actor: Actor, alias: str, bind: Binder) -> str:
        return f"{alias}.{field} = {bind(actor.user_id)}"

    owned.__name__ = owned.__qualname__ = f"owned_by_{field}"
    return owned


def everyone(actor: Actor, alias: str, bind: Binder) -> str | None:
    """Every row, for every signed-in caller."""
    return None


def nobody(actor: Actor, alias: str, bind: Binder) -> str:
    """No row, except for callers holding the policy's bypass permission."""
    return "FALSE"


def any_of(*rules: Predicate) -> Predicate:
    """Rows that at least one of `rules` admits."""

    def either(actor: Actor, alias: Alias, bind: Binder) -> str | None:
        parts = []
        for rule in rules:
            sql = rule(actor, alias, bind)
            if sql is None:
                return None  # one rule admits every row
            parts.append(f"({sql})")
        return " OR ".join(parts) if parts else "FALSE"

    return either


def all_of(*rules: Predicate) -> Predicate:
    """Rows that every one of `rules` admits."""

    def both(actor: Actor, alias: Alias, bind: Binder) -> str | None:
        parts = [f"({sql})" for rule in rules if (sql := rule(actor, alias, bind)) is not None]
        return " AND ".join(parts) if parts else None

    return both


def with_role(*roles: str, then: Predicate = everyone) -> Predicate:
    """For callers whose role is one of `roles`, `then` (every row by default); no row for the others."""

    def by_role(actor: Actor, alias: Alias, bind: Binder) -> str | None:
        return then(actor, alias, bind) if actor.role in roles else "FALSE"

    return by_role
