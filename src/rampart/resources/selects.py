"""How a resource's rows are read in SQL: the columns in their JSON-ready form, the table with its alias,
the sort keys of a keyset page and the condition on an item's key. Shared by reads and writes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from rampart.resources.spec import Binder, Resource


class TableSQL:
    """The SQL fragments of one resource's table, made once from its declaration."""

    alias = "t"

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        fields = resource.all_fields
        a = self.alias
        self.columns = tuple(fields)
        self.select = {n: f"{fields[n].type.select(f'{a}.{n}')} AS {n}" for n in fields}
        self.select_all = ", ".join(self.select.values())
        self.from_ = f"{resource.table} {a}"
        self.sort_keys = {n: f"{fields[n].type.select(f'{a}.{n}')} AS _k_{n}" for n in fields}

    def select_list(self, names: tuple[str, ...] | None) -> str:
        return self.select_all if names is None else ", ".join(self.select[n] for n in names)

    def key_where(self, key: Any, parent_id: uuid.UUID | None, bind: Binder) -> list[str]:
        """The conditions naming one item: its key, and its parent's id for a nested resource."""
        where = [f"{self.alias}.{self.resource.key} = {bind(key)}"]
        if parent_id is not None and self.resource.parent is not None:
            where.append(f"{self.alias}.{self.resource.parent.field} = {bind(parent_id)}")
        return where


def where_sql(conds: Sequence[str]) -> str:
    return (" WHERE " + " AND ".join(conds)) if conds else ""
