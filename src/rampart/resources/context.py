"""What a manager call knows about its caller, and what a hook receives.

`Context` is what every manager method takes: who is calling and the request's id. A hook gets a
`HookContext`: the same, plus the transaction's connection and the other resources' managers, so that what
it reads and writes commits or rolls back with the change that ran it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rampart.access.actor import Actor

if TYPE_CHECKING:
    from rampart.resources.manager import ResourceManager
    from rampart.resources.spec import Resource


@dataclass(frozen=True, slots=True)
class Context:
    """The caller of a manager call."""

    actor: Actor
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HookContext(Context):
    """What a hook receives as `ctx`: the caller, the write's transaction and every resource's manager.

    - `conn` is the transaction's connection: statements on it commit or roll back with the change.
    - `resources["projects"].create(ctx, {...})` (or `.get`, `.update`, ...) runs another resource's
      operation as the same caller, inside this transaction (as a savepoint): its checks, its hooks and its
      event apply, and subscribers hear of its event only once the outermost transaction commits.
    - `resource` is the declaration of the resource whose hook runs.
    """

    conn: Any  # asyncpg.Connection; Any keeps asyncpg out of an app's type checking
    resource: Resource
    resources: Mapping[str, ResourceManager] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionContext(HookContext):
    """What an action's handler receives as `ctx` (`rampart.resources.actions`): a `HookContext` (for a GET
    action, `conn` is a connection outside any transaction), plus what the request gave, each value
    parsed and checked by its declaration: `path`, the action's own path parameters; `query`, its query
    parameters (an absent one holds its default, else None); `body`, its body (None when it declares none).
    """

    path: Mapping[str, Any] = field(default_factory=dict)
    query: Mapping[str, Any] = field(default_factory=dict)
    body: Mapping[str, Any] | None = None
