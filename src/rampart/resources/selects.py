"""How a resource's rows are read in SQL: the columns in their JSON-ready form, the table with its alias,
the sort keys of a keyset page and the condition on an item's key. Shared by reads and writes.

On a Citus cluster a distributed resource's statements also name the row's shard key (decision 0019):
`key_where` pins it when it is known, and `alias` gives the predicates what they need to keep their
subqueries on that shard (`rampart.resources.placement.Alias`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from rampart.resources.placement import SHARD_KEY, Alias
from rampart.resources.spec import Binder, Resource


class TableSQL:
    """The SQL fragments of one resource's table, made once from its declaration."""

    alias = "t"

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        fields = resource.shown_fields  # a write-only column is written, never read back
        a = self.alias
        self.columns = tuple(fields)
        # The stored values of the write-only fields, for an update to tell whether one changed.
        self.stored_write_only = ", ".join(f"{a}.{n} AS _stored_{n}" for n in resource.write_only)
        self.select = {n: f"{fields[n].type.select(f'{a}.{n}')} AS {n}" for n in fields}
        self.select_all = ", ".join(self.select.values())
        # The same in RETURNING on a Citus cluster, which allows only IMMUTABLE functions there.
        self.returning_citus = ", ".join(
            f"{fields[n].type.select_immutable(f'{a}.{n}')} AS {n}" for n in fields
        )
        self.from_ = f"{resource.table} {a}"
        self.sort_keys = {n: f"{fields[n].type.select(f'{a}.{n}')} AS _k_{n}" for n in fields}
        self.sharded = resource.placement.kind == "distributed"
        self.plain_alias = Alias(a)

    def select_list(self, names: tuple[str, ...] | None) -> str:
        return self.select_all if names is None else ", ".join(self.select[n] for n in names)

    def returning(self, citus: bool) -> str:
        """The select list of a write's RETURNING."""
        return self.returning_citus if citus else self.select_all

    def key_where(
        self, key: Any, parent_id: uuid.UUID | None, bind: Binder, shard: str | None = None
    ) -> list[str]:
        """The conditions naming one item: its key, and its parent's id for a nested resource; first its
        shard key when given (`shard`: the bound value, on a Citus cluster)."""
        where = [f"{self.alias}.{self.resource.key} = {bind(key)}"]
        if parent_id is not None and self.resource.parent is not None:
            where.append(f"{self.alias}.{self.resource.parent.field} = {bind(parent_id)}")
        if shard is not None:
            where.insert(0, f"{self.alias}.{SHARD_KEY} = {shard}")
        return where

    def row_alias(self, citus: bool, shard: str | None = None, alias: str | None = None) -> Alias:
        """The alias a predicate gets for this table's rows: on a Citus cluster, with the row's shard key
        (`shard`, a bound value, when the statement is about rows of one shard; else the column)."""
        name = alias or self.alias
        if not citus or not self.sharded:
            return self.plain_alias if name == self.alias else Alias(name)
        if shard is not None:
            return Alias(name, shard, known=True)
        return Alias(name, f"{name}.{SHARD_KEY}")


def where_sql(conds: Sequence[str]) -> str:
    return (" WHERE " + " AND ".join(conds)) if conds else ""
