"""Declaring a resource: its fields, who may see and change it, and how it is listed.

A `Resource` is pure data. From it the framework derives the table (for migrations), the routes, the
validation, the OpenAPI description and the events; see `docs/guide/resources.md`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from rampart.resources.fields import FieldType, Id, Integer, Reference, Timestamp
from rampart.resources.placement import Alias, Placement

if TYPE_CHECKING:
    from rampart.access.actor import Actor
    from rampart.resources.actions import Action

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_SCHEMA_NAME_RE = re.compile(r"[A-Z][A-Za-z0-9]{0,62}")
# The record of a resource's deleted rows is the table `<table>_deleted` (decision 0016).
DELETED_SUFFIX = "_deleted"
_MAX_TABLE = 63 - len(DELETED_SUFFIX)  # PostgreSQL names hold 63 bytes
MISSING: Any = object()
SERVER_FIELDS = ("id", "created_at", "updated_at", "version")


class Binder:
    """Collects bound parameters: `bind(value)` returns the placeholder (`$3`) that stands for it."""

    __slots__ = ("params",)

    def __init__(self, params: list[Any] | None = None) -> None:
        self.params: list[Any] = params if params is not None else []

    def __call__(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"


class ColumnBinder(Binder):
    """A binder whose placeholders name columns, `prefix` + position, instead of `$n` (a statement run
    for many parameter sets at once: `rampart.db.batch`)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def __call__(self, value: Any) -> str:
        self.params.append(value)
        return f"{self.prefix}{len(self.params)}"


# A row predicate: given the actor, the table alias and a binder, the SQL condition (values bound, never
# inlined), or None when every row qualifies. The alias is a `str`; on a Citus cluster it also keeps the
# predicate's subqueries on the row's shard (`Alias.same_shard`, `Alias.pin`).
Predicate = Callable[["Actor", Alias, Binder], "str | None"]


@dataclass(frozen=True, slots=True)
class Field:
    """One column of a resource, as clients see it."""

    type: FieldType
    required: bool = False
    default: Any = MISSING
    nullable: bool = False
    filter: bool | Sequence[str] = False
    sort: bool = False
    read_only: bool = False
    immutable: bool = False
    index: bool = False
    unique: bool = False
    description: str = ""
    # Accepted on create and update and stored, never shown again: not in reads, lists, events, the audit
    # log, caches or the record of deleted rows; only the create answer holds it (a secret).
    write_only: bool = False

    def new_default(self) -> Any:
        """The value of an omitted field on create: `default`, or what it returns when it is a function
        (called for each new row: a generated secret)."""
        return self.default() if callable(self.default) else self.default

    @property
    def operators(self) -> tuple[str, ...]:
        if self.filter is False:
            return ()
        ops = self.type.operators if self.filter is True else tuple(self.filter)
        return (*ops, "is") if self.nullable and "is" not in ops else tuple(ops)


@dataclass(frozen=True, slots=True)
class Policy:
    """Who may see, change and delete rows, as SQL predicates, and which permission creating needs.

    `visible` filters every read (lists and counts filter in the database). `writable` decides updates
    and, unless `deletable` is given, deletes. Actors holding `bypass_read`/`bypass_write` skip them.
    `inherits` names a reference field: a row is then visible, writable and deletable exactly when the row
    it references is (and creating one needs that row writable), on top of any predicate given here.

    The constructors below cover the common rules (`rampart.resources.policies` has the predicates they use,
    for combining with your own).
    """

    visible: Predicate | None = None
    writable: Predicate | None = None
    deletable: Predicate | None = None
    create_permission: str | None = None
    write_permission: str | None = None
    read_permission: str | None = None
    bypass_read: str = "resources:read_any"
    bypass_write: str = "resources:write_any"
    # Resources whose changes can change who sees rows of this one (the row cache forgets its
    # decisions when they change). None: any other resource may matter (safe, but caches less).
    # The inherited resource, and what it depends on, are added by the framework.
    depends_on: tuple[str, ...] | None = None
    inherits: str | None = None
    # Callers without it see none of the resource's events in the audit log and the live stream, whatever
    # rows they may see (holders of `events:read_any` see every event); None: the events of visible rows.
    audit_permission: str | None = None

    @classmethod
    def owner(cls, field: str = "owner_id", **options: Any) -> Policy:
        """Rows are seen and changed by their owner only (and callers holding the bypass permissions).

        This is what a resource with an owner field gets when it declares no policy."""
        from rampart.resources.policies import owned_by

        rule = owned_by(field)
        return cls(visible=rule, writable=rule, **{"depends_on": (), **options})

    @classmethod
    def inherit(cls, field: str, **options: Any) -> Policy:
        """Rows are seen, changed and deleted exactly when the row `field` references is, and creating one
        needs that row writable: comments of a task, with `Policy.inherit("task_id")`. The audit log follows
        the same rule, also once both rows are deleted."""
        return cls(inherits=field, **{"depends_on": (), **options})

    @classmethod
    def read_only(cls, **options: Any) -> Policy:
        """Every signed-in caller reads every row; only the bypassing roles (admins) create or change any."""
        from rampart.resources.policies import everyone, nobody

        return cls(
            visible=everyone,
            writable=nobody,
            **{"create_permission": "resources:write_any", "depends_on": (), **options},
        )

    @classmethod
    def shared(cls, field: str = "owner_id", **options: Any) -> Policy:
        """Every signed-in caller reads every row; only its owner (and admins) changes or deletes it."""
        from rampart.resources.policies import everyone, owned_by

        return cls(visible=everyone, writable=owned_by(field), **{"depends_on": (), **options})

    @classmethod
    def for_permissions(cls, *, read: str, write: str, **options: Any) -> Policy:
        """Role-based: callers whose role holds `read` see every row, those holding `write` also create,
        change and delete any row; others get 403."""
        from rampart.resources.policies import everyone

        return cls(
            visible=everyone,
            writable=everyone,
            read_permission=read,
            create_permission=write,
            write_permission=write,
            **{"depends_on": (), **options},
        )

    @classmethod
    def admin_only(cls, **options: Any) -> Policy:
        """Only callers holding the bypass permissions (admins, by default) see or change anything."""
        from rampart.resources.policies import nobody

        return cls(
            visible=nobody,
            writable=nobody,
            **{"create_permission": "resources:write_any", "depends_on": (), **options},
        )


# A hook: an async function called with keyword arguments only (see `Hooks`).
Hook = Callable[..., Awaitable[None]]
_HOOK_ARGUMENTS = {
    "before_create": ("ctx", "data"),
    "after_create": ("ctx", "row"),
    "before_update": ("ctx", "current", "changes"),
    "after_update": ("ctx", "row", "before"),
    "before_delete": ("ctx", "row"),
    "after_delete": ("ctx", "row"),
}


@dataclass(frozen=True, slots=True)
class Hooks:
    """Business logic run inside a write's transaction, each an `async def` taking keyword arguments:

    - `before_create(*, ctx, data)`: the values about to be inserted (edit them in place, or raise);
    - `after_create(*, ctx, row)`: the inserted row;
    - `before_update(*, ctx, current, changes)`: the locked row and the fields that differ (editable;
      left empty, nothing is written and no event fires);
    - `after_update(*, ctx, row, before)`; `before_delete(*, ctx, row)`; `after_delete(*, ctx, row)`.

    `ctx` is a `HookContext` (the caller, `conn` of the transaction, the other resources' managers). A hook
    that raises a Rampart error (`Conflict`, `Forbidden`, `ValidationFailed`, ...) rolls the whole change
    back: no row, no event, and the client gets that problem. See docs/guide/resources.md, "Hooks".
    """

    before_create: Hook | None = None
    after_create: Hook | None = None
    before_update: Hook | None = None
    after_update: Hook | None = None
    before_delete: Hook | None = None
    after_delete: Hook | None = None

    def __post_init__(self) -> None:
        for name, arguments in _HOOK_ARGUMENTS.items():
            hook = getattr(self, name)
            if hook is None:
                continue
            if not inspect.iscoroutinefunction(hook) and not inspect.iscoroutinefunction(
                getattr(hook, "__call__", None)  # noqa: B004 - a callable object's async __call__
            ):
                raise TypeError(f"hook {name} must be an async function")
            try:
                inspect.signature(hook).bind(**dict.fromkeys(arguments))
            except TypeError:
                raise TypeError(
                    f"hook {name} must accept the keyword arguments {', '.join(arguments)}"
                    f" (for example `async def {name}(*, {', '.join(arguments)}) -> None`)"
                ) from None

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))


@dataclass(frozen=True, slots=True)
class Parent:
    """A nested collection: `/parents/{parent_id}/<name>`; rows belong to one parent row.

    Reading needs the parent visible; changing needs the parent `writable` by its policy (or `manage`,
    a predicate on the parent table, when given).
    """

    resource: str
    field: str
    manage: Predicate | None = None


# The default of `Resource.policy`, told apart by identity: a resource that declares no policy gets
# `Policy.owner()` when it has an owner field (else only the bypassing roles, and a nested resource's
# parent rules, apply).
_NO_POLICY = Policy()


@dataclass(slots=True)
class Resource:
    """A resource declared once; see the module docstring."""

    name: str
    fields: dict[str, Field]
    policy: Policy = _NO_POLICY
    table: str = ""
    path: str = ""
    owner_field: str | None = "owner_id"
    permission: str | None = None  # every route of the resource needs it (403 otherwise)
    default_sort: str = "-created_at"
    indexes: Sequence[Sequence[str]] = ()
    unique_together: Sequence[Sequence[str]] = ()
    parent: Parent | None = None
    key: str = "id"
    operations: frozenset[str] = frozenset({"list", "get", "create", "update", "delete"})
    description: str = ""
    # The name of its item in the OpenAPI document and in generated clients (`Task`, with `TaskCreate`,
    # `TaskUpdate`, `TaskPage`); by default the singular of `name` in PascalCase.
    schema_name: str = ""
    hooks: Hooks = field(default_factory=Hooks)
    placement: Placement = field(default_factory=Placement)  # on a Citus cluster (resources.placement)
    # Routes on its items besides the five operations (`rampart.resources.actions`).
    actions: Sequence[Action] = ()
    all_fields: dict[str, Field] = field(init=False)
    # What clients are shown: every field but the write-only ones (made once, for every read).
    shown_fields: dict[str, Field] = field(init=False)
    write_only: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.table = self.table or self.name
        self.path = self.path or self.name
        self.schema_name = self.schema_name or pascal_case(_singular(self.name))
        if not _SCHEMA_NAME_RE.fullmatch(self.schema_name):
            raise ValueError(f"{self.name}: schema_name {self.schema_name!r} is not a PascalCase name")
        for name in (self.name, self.table, *self.fields):
            if not _NAME_RE.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid resource, table or field name")
        if len(self.table) > _MAX_TABLE:
            raise ValueError(f"table name {self.table!r} is longer than {_MAX_TABLE} characters")
        if reserved := set(SERVER_FIELDS) & set(self.fields):
            raise ValueError(f"{self.name}: fields {sorted(reserved)} are provided by the framework")
        declared = dict(self.fields)
        if self.owner_field and self.owner_field not in declared:
            declared[self.owner_field] = Field(
                Reference("users", must="exist"), read_only=True, filter=("eq", "in")
            )  # indexed as a reference is (rampart.resources.tables)
        self.all_fields = {
            "id": Field(Id(), read_only=True, filter=("eq", "in"), sort=True),
            **declared,
            "created_at": Field(Timestamp(), read_only=True, filter=True, sort=True),
            "updated_at": Field(Timestamp(), read_only=True, filter=True, sort=True),
            "version": Field(Integer(minimum=1), read_only=True),
        }
        if self.parent and self.parent.field not in self.all_fields:
            raise ValueError(f"{self.name}: parent field {self.parent.field!r} is not declared")
        if self.key not in self.all_fields:
            raise ValueError(f"{self.name}: key {self.key!r} is not a field")
        for name, spec in self.all_fields.items():
            allowed = set(spec.type.operators) | ({"is"} if spec.nullable else set())
            if unknown := set(spec.operators) - allowed:
                raise ValueError(
                    f"{self.name}.{name}: operators {sorted(unknown)} do not apply to this field type"
                )
            if spec.sort and spec.nullable:
                raise ValueError(f"{self.name}.{name}: a nullable field cannot be sortable (keyset cursors)")
            if spec.sort and not spec.type.sortable:
                raise ValueError(f"{self.name}.{name}: a {type(spec.type).__name__} field cannot be sortable")
            if spec.write_only:
                self._check_write_only(name, spec)
        self.write_only = tuple(n for n, f in self.all_fields.items() if f.write_only)
        self.shown_fields = {n: f for n, f in self.all_fields.items() if not f.write_only}
        for name in self.default_sort.split(","):
            if not self.all_fields.get(name.lstrip("-"), Field(Id())).sort:
                raise ValueError(f"{self.name}: default sort {name!r} is not a sortable field")
        if self.policy is _NO_POLICY and self.owner_field:
            self.policy = Policy.owner(self.owner_field)
        inherits = self.policy.inherits
        if inherits is not None and not isinstance(
            self.all_fields.get(inherits, Field(Id())).type, Reference
        ):
            raise ValueError(f"{self.name}: Policy.inherit({inherits!r}) must name a Reference field")
        self._check_placement()
        self._check_actions()

    def _check_write_only(self, name: str, spec: Field) -> None:
        """A write-only field is never read back: not by a filter, a sort, a key, a cursor or a 409."""
        refused = {
            "read_only": spec.read_only,
            "filter": bool(spec.filter),
            "sort": spec.sort,
            "unique": spec.unique,
            "the key": name == self.key,
            "the parent field": self.parent is not None and name == self.parent.field,
            "the owner field": name == self.owner_field,
        }
        if found := [what for what, yes in refused.items() if yes]:
            raise ValueError(f"{self.name}.{name}: a write-only field cannot be {' or '.join(found)}")

    def _check_actions(self) -> None:
        seen: set[tuple[str, str]] = set()
        names: set[str] = set()
        for action in self.actions:
            if taken := {self.key, "parent_id"} & set(action.params):
                raise ValueError(f"{self.name}: action {action.name} names path parameter {sorted(taken)}")
            if action.name in names or (action.method, action.path) in seen:
                raise ValueError(f"{self.name}: two actions named {action.name} or at {action.path}")
            names.add(action.name)
            seen.add((action.method, action.path))

    def _check_placement(self) -> None:
        placement = self.placement
        if placement.kind not in ("distributed", "reference", "local"):
            raise ValueError(f"{self.name}: unknown placement {placement.kind!r}")
        if placement.kind != "distributed":
            if placement.by is not None:
                raise ValueError(f"{self.name}: only a distributed placement names a field (by=)")
            return
        by = placement.by
        if by is not None:
            spec = self.all_fields.get(by)
            if spec is None or not isinstance(spec.type, Reference) or by == "id":
                raise ValueError(f"{self.name}: Placement.distributed(by={by!r}) must name a Reference field")
            # The row's shard is its referenced row's, for good: the reference can neither change nor be
            # missing.
            if spec.nullable or not (spec.immutable or spec.read_only):
                raise ValueError(
                    f"{self.name}: Placement.distributed(by={by!r}) needs a reference that is not nullable"
                    " and never changes (immutable=True, or read_only and set from a parent)"
                )
        # A row is found by its key: the id carries its shard key, a nested key its parent's.
        if self.key != "id" and not (self.parent is not None and self.parent.field == by):
            parent = self.parent.field if self.parent else "parent_id"
            raise ValueError(
                f"{self.name}: a distributed resource is found by its id, or by its key within a parent it"
                f" is placed by (Placement.distributed(by={parent!r}))"
            )
        # Citus enforces uniqueness within a shard only: a unique set of columns must hold the one the
        # shard follows (then the shard key is a function of it).
        for name, spec in self.all_fields.items():
            if spec.unique and name != "id":
                raise ValueError(
                    f"{self.name}.{name}: a distributed resource cannot keep a field unique on its own;"
                    f" declare unique_together=[({by or 'id'!r}, {name!r})]"
                )
        for cols in self.unique_together:
            if (by or "id") not in cols and "id" not in cols:
                raise ValueError(
                    f"{self.name}: unique_together {tuple(cols)} must include {by or 'id'!r} on a distributed"
                    " resource (Citus enforces uniqueness within a shard)"
                )

    @property
    def deleted_table(self) -> str:
        """The record of this resource's deleted rows, as each was when deleted (the audit log's)."""
        return self.table + DELETED_SUFFIX

    @property
    def writable_fields(self) -> dict[str, Field]:
        """Fields a client may set on create."""
        return {n: f for n, f in self.all_fields.items() if not f.read_only}


def _check_placed_reference(resource: Resource, field: str, target: Resource) -> None:
    """A resource distributed `by` a reference lives on the shard of the row it names: that row must be
    distributed too. (What else Citus refuses, a local table referencing a distributed one, say, is refused
    by `rampart migrate` on a cluster: on one PostgreSQL server any reference works.)"""
    source = resource.placement
    if source.kind == "distributed" and source.by == field and target.placement.kind != "distributed":
        raise ValueError(
            f"{resource.name}: Placement.distributed(by={field!r}) names {target.name}, which is not"
            " distributed"
        )


def _singular(name: str) -> str:
    """English plural to singular for the usual cases (tasks, categories, boxes, addresses, releases); a
    name it gets wrong (statuses) is fixed by declaring `schema_name`."""
    if name.endswith("ies") and len(name) > 3:
        return name[:-3] + "y"
    if name.endswith(("sses", "xes", "ches", "shes")):
        return name[:-2]
    if name.endswith("s") and not name.endswith(("ss", "us", "is")):  # status, analysis: already singular
        return name[:-1]
    return name


def pascal_case(name: str) -> str:
    """`task_comments` -> `TaskComments`."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


class Registry:
    """The one explicit list of declared resources (no registration by import side effect)."""

    def __init__(self) -> None:
        self._resources: dict[str, Resource] = {}

    def add(self, resource: Resource) -> Resource:
        if resource.name in self._resources:
            raise ValueError(f"resource {resource.name!r} is declared twice")
        for other in self._resources.values():
            if resource.table in (other.table, other.deleted_table) or resource.deleted_table == other.table:
                raise ValueError(f"resources {other.name!r} and {resource.name!r} need the same table name")
        self._resources[resource.name] = resource
        return resource

    def get(self, name: str) -> Resource:
        return self._resources[name]

    def __iter__(self) -> Any:
        return iter(self._resources.values())

    def __contains__(self, name: object) -> bool:
        return name in self._resources


def check_references(registry: Registry) -> None:
    """Refuse, when the app is built, declarations that name resources that are not declared, chains of
    `Policy.inherit` that come back to where they started, and a placement `by` a resource that is not
    distributed."""
    for resource in registry:
        for name, spec in resource.all_fields.items():
            target = getattr(spec.type, "target", None)
            if target is not None and target not in registry:
                raise ValueError(f"{resource.name}.{name} references {target!r}, which is not declared")
            if target is not None and name != "id":
                _check_placed_reference(resource, name, registry.get(target))
        if resource.parent is not None and resource.parent.resource not in registry:
            raise ValueError(f"{resource.name}: parent {resource.parent.resource!r} is not declared")
        seen = [resource.name]
        current = resource
        while current.policy.inherits is not None:
            inherited: str = getattr(current.all_fields[current.policy.inherits].type, "target", "")
            if inherited in seen:
                raise ValueError(f"Policy.inherit makes a cycle: {' -> '.join([*seen, inherited])}")
            seen.append(inherited)
            current = registry.get(inherited)
