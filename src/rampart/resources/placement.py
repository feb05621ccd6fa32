"""Where a resource's rows live on a Citus cluster, and what a predicate needs to keep its subqueries on
the row's shard (docs/guide/database-scaling.md; decisions 0019 and 0024).

On one PostgreSQL server every placement is the same table: the declaration only matters once the
database is a Citus coordinator, where `rampart migrate` places each table as declared.

- `Placement.distributed()`: the rows are spread over the workers by their own id (a group's root:
  projects). `Placement.distributed(by="project_id")`: each row lives on the shard of the row that
  reference names (a project's tasks and members), so the joins of one project never leave its shard.
  Either way the table gets a `shard_key integer` column, its distribution column: a root's is the last
  32 bits of its id, and a row placed `by` a reference is given an id whose last 32 bits are the
  referenced row's (`rampart.lib.ids`), so a read by id knows the shard without asking.
- `Placement.reference()`: a copy on every node (users): joins with it never leave a node; every write
  goes to all of them.
- `Placement.local()` (the default): on the coordinator only.
"""

from __future__ import annotations

from dataclasses import dataclass

SHARD_KEY = "shard_key"  # the distribution column of every distributed table


@dataclass(frozen=True, slots=True)
class Placement:
    """How a resource's table is placed on a Citus cluster (see the module docstring)."""

    kind: str = "local"  # "distributed", "reference" or "local"
    by: str | None = None  # distributed: the reference field whose row this one lives with

    @classmethod
    def distributed(cls, by: str | None = None) -> Placement:
        """Spread over the workers: by the row's own id, or (`by`, a required, immutable reference to a
        distributed resource) on the shard of the row it references."""
        return cls("distributed", by)

    @classmethod
    def reference(cls) -> Placement:
        """A copy on every node: for small tables read with everything (users), written rarely."""
        return cls("reference")

    @classmethod
    def local(cls) -> Placement:
        """On the coordinator only (the default): correct everywhere, not spread."""
        return cls("local")


class Alias(str):
    """The alias of the table a predicate is written for. It is the alias itself (`f"{t}.owner_id"`
    works as always), and knows how to keep a subquery on the row's shard on a Citus cluster, where a
    statement goes to one worker only when every distributed table in it is pinned to one shard:

    - `t.same_shard("pm")` for a subquery that refers to the row (correlated:
      `EXISTS (SELECT 1 FROM project_members pm WHERE pm.project_id = t.id{t.same_shard("pm")} ...)`);
    - `t.pin("pm")` for one that does not (`t.id = ANY(ARRAY(SELECT pm.project_id FROM project_members
      pm WHERE pm.user_id = $1{t.pin("pm")}))`): it pins only when the row's shard key is known (a read
      by id), so a list keeps the subquery uncorrelated: run once, not once per row.

    Both write `' AND <other>.shard_key = <the row's shard key>'`, or nothing on one PostgreSQL server
    and for rows whose table is not distributed.
    """

    shard: str | None  # the row's shard key in SQL: a bound value, the column, or None (not distributed)
    known: bool  # `shard` is a bound value (the manager knows which row it asks about)

    def __new__(cls, name: str, shard: str | None = None, *, known: bool = False) -> Alias:
        alias = super().__new__(cls, name)
        alias.shard = shard
        alias.known = known and shard is not None
        return alias

    def same_shard(self, other: str) -> str:
        """` AND <other>.shard_key = <this row's shard key>` on a cluster; nothing otherwise."""
        return f" AND {other}.{SHARD_KEY} = {self.shard}" if self.shard is not None else ""

    def pin(self, other: str) -> str:
        """` AND <other>.shard_key = <this row's shard key>` when it is known (a bound value); nothing
        otherwise."""
        return f" AND {other}.{SHARD_KEY} = {self.shard}" if self.known else ""

    def inner(self, name: str, *, colocated: bool) -> Alias:
        """The alias of a table a subquery joins to this row: on the same shard when `colocated`."""
        if not colocated or self.shard is None:
            return Alias(name)
        return Alias(name, self.shard if self.known else f"{name}.{SHARD_KEY}", known=self.known)


def plain(name: str) -> Alias:
    """An alias that pins nothing (one PostgreSQL server, or a table that is not distributed)."""
    return Alias(name)
