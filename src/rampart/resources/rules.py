"""Who may see and change the rows of one resource, as SQL conditions: the policy's predicates, a nested
resource's parent, `Policy.inherit`, the bypass and read permissions, the audit log's index-answered form
of the same rule, and the checks of the references a write names.

Conditions reach other resources through their managers (a parent's visibility, an inherited row's
writability), so a rule is written once and holds in every query that reads rows.

The alias a rule is asked for may be an `Alias` that knows the row's shard key (on a Citus cluster): the
subqueries on a parent or an inherited row that lives on the same shard then name it, and so can the
policy's predicates (decision 0019).
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from rampart.access.actor import Actor
from rampart.lib.ids import shard_key_of
from rampart.resources.context import Context
from rampart.resources.fields import Reference
from rampart.resources.placement import SHARD_KEY, Alias
from rampart.resources.spec import Binder, Resource

if TYPE_CHECKING:
    from rampart.resources.manager import ResourceManager


class AccessRules:
    """The visibility and write rules of one resource (`Resource.policy`), as SQL on a table alias."""

    def __init__(self, resource: Resource, *, managers: Mapping[str, ResourceManager]) -> None:
        self.resource = resource
        self.managers = managers  # every manager by resource name: parents, inherited and referenced rows
        placement = resource.placement
        by = placement.by if placement.kind == "distributed" else None
        # On a cluster, the parent (or the inherited row) lives on this row's shard when the row is placed
        # by that reference.
        self._parent_colocated = resource.parent is not None and by == resource.parent.field
        self._inherit_colocated = resource.policy.inherits is not None and by == resource.policy.inherits

    def visible_sql(self, actor: Actor, alias: str, bind: Binder) -> str | None:
        """The condition for rows `actor` may see, or None when all are visible."""
        alias = _alias(alias)
        policy = self.resource.policy
        if policy.read_permission is not None and not actor.can(policy.read_permission):
            # Lists and reads by id answer 403 before asking; everything else that reads rows through
            # this rule (references, the audit log, the live stream) must see none either.
            return "FALSE"
        if actor.can(policy.bypass_read):
            return None
        conds = []
        if self.resource.parent is not None:
            parent = self.managers[self.resource.parent.resource]
            inner = parent.visible_sql(actor, alias.inner("par", colocated=self._parent_colocated), bind)
            if inner is not None:
                conds.append(self._parent_exists(alias, inner))
        if policy.inherits is not None:
            conds.append(self._inherited(alias, lambda m, a: m.visible_sql(actor, a, bind)))
        if policy.visible is not None:
            own = policy.visible(actor, alias, bind)
            if own is not None:
                conds.append(own)
        elif self.resource.parent is None and policy.inherits is None:
            return "FALSE"  # a resource with no visibility rule is visible only to bypassing roles
        return " AND ".join(f"({c})" for c in conds) if conds else None

    def events_visible_sql(self, actor: Actor, alias: str, bind: Binder) -> str | None:
        """The condition on a row of this resource under which `actor` may see the object's events, or None
        when every event of the resource is visible. The row is the live one, or the one kept in the
        record of deleted rows (`Resource.deleted_table`) as the object was when deleted.

        The audit log uses it two ways (decision 0016): on one row found by id, and to list every row
        that meets it, which must be answered through the table's indexes, never row by row over the
        table (the record of deleted rows has the same indexes). The default is the visibility rule of
        `visible_sql`, with the parent's part (and the inherited row's, `Policy.inherit`) written as a set:
        `<field> = ANY(ARRAY(<ids of parents whose events the caller sees, live or deleted>))`, which the
        index on the reference answers; the policy's own predicate must be such a condition too (see
        docs/guide/resources.md, "Visibility that an index answers").
        """
        alias = _alias(alias)
        policy = self.resource.policy
        if self.events_hidden(actor):
            return "FALSE"
        if actor.can(policy.bypass_read):
            return None
        conds = []
        # A parent, or the row `Policy.inherit` names, as a set of ids whose events the caller may see,
        # live or deleted: a child deleted with its parent stays visible exactly as long as the parent's
        # own history does.
        links: builtins.list[tuple[str, str]] = []
        if self.resource.parent is not None:
            links.append((self.resource.parent.field, self.resource.parent.resource))
        if policy.inherits is not None:
            links.append((policy.inherits, self._inherited_target()))
        for field, target in links:
            ids = self.managers[target].events_visible_ids_sql(actor, bind)
            if ids is not None:
                conds.append(f"{alias}.{field} = ANY(ARRAY({ids}))")
        if policy.visible is not None:
            own = policy.visible(actor, alias, bind)
            if own is not None:
                conds.append(own)
        elif self.resource.parent is None and policy.inherits is None:
            return "FALSE"
        return " AND ".join(f"({c})" for c in conds) if conds else None

    def events_hidden(self, actor: Actor) -> bool:
        """`actor` may see none of this resource's events, whatever rows they see: they lack its
        `Policy.read_permission` or `Policy.audit_permission`."""
        policy = self.resource.policy
        return any(
            p is not None and not actor.can(p) for p in (policy.read_permission, policy.audit_permission)
        )

    def _inherited_target(self) -> str:
        """The resource `Policy.inherit` names (through its reference field)."""
        field = self.resource.policy.inherits
        assert field is not None
        target: str = getattr(self.resource.all_fields[field].type, "target", "")
        return target

    def events_visible_ids_sql(
        self, actor: Actor, bind: Binder, *, alias: Alias | None = None, shard_key: bool = False
    ) -> str | None:
        """A query of the ids (column `id`) of this resource's objects whose events `actor` may see, live or
        deleted, found through the indexes of the table and of its record of deleted rows; None when every
        event of the resource is visible. `alias`: the alias of those rows (on a cluster, one that knows
        their shard key); `shard_key`: the query also gives each one's (column `shard_key`)."""
        o = alias if alias is not None else Alias("o")
        cond = self.events_visible_sql(actor, o, bind)
        if cond is None:
            return None
        gone = self.events_visible_sql(actor, o, bind)
        columns = f"{o}.{SHARD_KEY}, {o}.id" if shard_key else f"{o}.id"
        return (
            f"SELECT {columns} FROM {self.resource.table} {o} WHERE {cond}"
            f" UNION ALL SELECT {columns} FROM {self.resource.deleted_table} {o} WHERE {gone}"
        )

    def writable_sql(self, actor: Actor, alias: str, bind: Binder, *, delete: bool = False) -> str | None:
        alias = _alias(alias)
        policy = self.resource.policy
        if actor.can(policy.bypass_write):
            return None
        predicate = (policy.deletable or policy.writable) if delete else policy.writable
        if policy.inherits is not None:
            # Changing or deleting a row is changing the row it inherits from.
            inherited = self._inherited(alias, lambda m, a: m.writable_sql(actor, a, bind))
            own = predicate(actor, alias, bind) if predicate is not None else None
            return inherited if own is None else f"({inherited}) AND ({own})"
        if self.resource.parent is not None and predicate is None:
            parent = self.managers[self.resource.parent.resource]
            inner = parent.manage_sql(
                actor,
                alias.inner("par", colocated=self._parent_colocated),
                bind,
                manage=self.resource.parent.manage,
            )
            if inner is None:
                return None
            return self._parent_exists(alias, inner)
        if predicate is None:
            return "FALSE"
        return predicate(actor, alias, bind)

    def _parent_exists(self, alias: Alias, inner: str) -> str:
        """`EXISTS` the parent row (aliased `par`) and `inner` holds for it there."""
        assert self.resource.parent is not None
        parent = self.managers[self.resource.parent.resource]
        same = alias.same_shard("par") if self._parent_colocated else ""
        return (
            f"EXISTS (SELECT 1 FROM {parent.resource.table} par"
            f" WHERE par.id = {alias}.{self.resource.parent.field}{same} AND {inner})"
        )

    def _inherited(self, alias: Alias, rule: Callable[[ResourceManager, Alias], str | None]) -> str:
        """`EXISTS` the row that the `Policy.inherit` field references, and `rule` holds for it there."""
        field = self.resource.policy.inherits
        assert field is not None
        reference = self.resource.all_fields[field].type
        assert isinstance(reference, Reference)
        target = self.managers[reference.target]
        # One deeper per level: a chain of inherits never shadows an alias.
        inner_alias = alias.inner(f"{alias}_i", colocated=self._inherit_colocated)
        inner = rule(target, inner_alias)
        same = alias.same_shard(inner_alias) if self._inherit_colocated else ""
        return (
            f"EXISTS (SELECT 1 FROM {target.resource.table} {inner_alias}"
            f" WHERE {inner_alias}.id = {alias}.{field}{same}" + (f" AND {inner})" if inner else ")")
        )

    def manage_sql(self, actor: Actor, alias: str, bind: Binder, *, manage: Any = None) -> str | None:
        """The condition for changing this row's children: `manage` if given, else the write policy."""
        alias = _alias(alias)
        if actor.can(self.resource.policy.bypass_write):
            return None
        if manage is not None:
            result: str | None = manage(actor, alias, bind)
            return result
        return self.writable_sql(actor, alias, bind)

    def reference_checks(
        self,
        ctx: Context,
        data: Mapping[str, Any],
        bind: Binder,
        *,
        citus: bool = False,
        shard_keys: Mapping[str, int] | None = None,
    ) -> builtins.list[tuple[str, str, str]]:
        """(field, target resource, `EXISTS (...)` condition) for each reference in `data` to check: the
        row must exist and be one the caller may see (or use), else it is treated as if it did not exist.

        `citus`: on a cluster, a reference to a distributed resource names the referenced row's shard
        (`shard_keys[field]`, else the id's), so the check runs on that one worker."""
        checks = []
        for name, value in data.items():
            field_type = self.resource.all_fields[name].type
            if value is None or not isinstance(field_type, Reference) or name == self.resource.owner_field:
                continue
            if self.resource.parent is not None and name == self.resource.parent.field:
                continue  # checked by require_parent
            target = self.managers[field_type.target]
            r, pinned = Alias("r"), ""
            if citus and target.resource.placement.kind == "distributed" and isinstance(value, uuid.UUID):
                key = (shard_keys or {}).get(name, shard_key_of(value))
                r = Alias("r", bind(key), known=True)
                pinned = f" AND r.{SHARD_KEY} = {r.shard}"
            cond: str | None
            if name == self.resource.policy.inherits:
                # A row that inherits its access from the referenced one may be made only by whoever may
                # change that one (as a nested resource's parent must be manageable).
                cond = target.writable_sql(ctx.actor, r, bind)
            elif field_type.must == "exist":
                cond = None
            elif field_type.must == "see":
                cond = target.visible_sql(ctx.actor, r, bind)
            elif field_type.must == "write":
                cond = target.writable_sql(ctx.actor, r, bind)
            else:
                bypass = ctx.actor.can(target.resource.policy.bypass_write)
                cond = None if bypass else field_type.must(ctx.actor, r, bind)
            exists = f"EXISTS (SELECT 1 FROM {target.resource.table} r WHERE r.id = {bind(value)}{pinned}" + (
                f" AND {cond})" if cond else ")"
            )
            checks.append((name, target.resource.name, exists))
        return checks


def _alias(alias: str) -> Alias:
    """The alias as an `Alias` (a plain one when a caller gave a `str`: nothing to pin)."""
    return alias if isinstance(alias, Alias) else Alias(alias)
