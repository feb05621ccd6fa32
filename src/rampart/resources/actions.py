"""Actions: routes a resource declares on its items, beside the five operations.

`Action("redeliver", handler, path="deliveries/{event_id}/redeliver", params={"event_id": Id()})` in
`Resource(actions=[...])` is served as `POST /api/v1/<path>/{id}/deliveries/{event_id}/redeliver`. Before
the handler runs, the manager loads the item as the caller: absent or not visible is 404 (as for a GET of
it). A POST action changes something: it also needs the write rule (`writable`, `write_permission`: 403),
holds the row's lock, and runs in a transaction the handler takes part in, as a hook does. The action's
own path parameters, query parameters and body are parsed and checked from their declarations first, and
all of it is in the OpenAPI document (so generated clients have the action as a method).

A handler is `async def handler(*, ctx: ActionContext, row: dict) -> ...`; it answers with what it
returns: a value (sent as `{"data": value}` with the action's status), a `Page` (a list's body), or a
Response of its own. See docs/guide/resources.md, "Actions".
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.datastructures import QueryParams
from starlette.responses import Response

from rampart.errors import FieldError, InvalidQuery, NotFound
from rampart.resources.context import ActionContext, Context
from rampart.resources.endpoints import empty_response, json_response
from rampart.resources.fields import FieldInvalid, FieldType
from rampart.resources.openapi_parts import Named, data, json_body, named, problems, response
from rampart.resources.openapi_schema import field_schema, page_schema
from rampart.resources.reads import Page
from rampart.resources.spec import MISSING, Field, pascal_case
from rampart.resources.validation import validate_fields

if TYPE_CHECKING:
    from rampart.resources.manager import ResourceManager
    from rampart.resources.spec import Resource

# An action's handler: `async def handler(*, ctx: ActionContext, row: dict) -> Any`.
ActionHandler = Callable[..., Awaitable[Any]]
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_SEGMENT_RE = re.compile(r"^(?:[a-z0-9][a-z0-9_-]{0,62}|\{([a-z][a-z0-9_]{0,62})\})$")


@dataclass(frozen=True, slots=True)
class Action:
    """A route on a resource's items (see the module docstring).

    - `name`: the operation's id (`<resource>.<name>`) and, by default, its path under the item;
    - `method`: "GET" (reads: the item must be visible) or "POST" (changes: visible and writable);
    - `path`: under the item, slash-separated; a `{name}` segment is a path parameter of `params`;
    - `params`: each path parameter's type (a malformed value is 404, as a malformed id is);
    - `query`: the query parameters, each a `Field` (default, required, type; unknown ones are 400);
    - `body`: the JSON body's fields, validated as a create's (None: the action takes no body);
    - `response`: the JSON Schema of what the handler returns (a `Page`'s items when `page`);
    - `status`: of a success; `problems`: statuses the handler may answer besides the framework's.
    """

    name: str
    handler: ActionHandler
    method: str = "POST"
    path: str = ""
    params: Mapping[str, FieldType] = field(default_factory=dict)
    query: Mapping[str, Field] = field(default_factory=dict)
    body: Mapping[str, Field] | None = None
    response: dict[str, Any] | Named | None = None
    page: bool = False
    status: int = 200
    problems: tuple[int, ...] = ()
    summary: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", self.path or self.name)
        if not _NAME_RE.fullmatch(self.name):
            raise ValueError(f"action name {self.name!r} must match {_NAME_RE.pattern}")
        if self.method not in ("GET", "POST"):
            raise ValueError(f"action {self.name}: method must be GET or POST")
        placeholders = []
        for segment in self.path.split("/"):
            found = _SEGMENT_RE.fullmatch(segment)
            if found is None:
                raise ValueError(f"action {self.name}: path segment {segment!r} is not a name or {{name}}")
            if found.group(1):
                placeholders.append(found.group(1))
        if len(set(placeholders)) != len(placeholders) or set(placeholders) != set(self.params):
            raise ValueError(f"action {self.name}: declare each {{name}} of its path, once, in params")
        for name in (*self.query, *(self.body or {})):
            if not _NAME_RE.fullmatch(name):
                raise ValueError(f"action {self.name}: {name!r} is not a valid parameter or field name")
        if self.method == "GET" and self.body is not None:
            raise ValueError(f"action {self.name}: a GET action takes no body")
        if not 200 <= self.status <= 299 or (self.page and self.response is None):
            raise ValueError(f"action {self.name}: a 2xx status, and a response schema for a page")
        if not inspect.iscoroutinefunction(self.handler):
            raise TypeError(f"action {self.name}: the handler must be an async function")
        try:
            inspect.signature(self.handler).bind(ctx=None, row=None)
        except TypeError:
            raise TypeError(
                f"action {self.name}: the handler must accept the keyword arguments ctx and row"
                f" (`async def {self.name}(*, ctx, row)`)"
            ) from None

    @property
    def changes(self) -> bool:
        """A POST: the item is locked and must be writable, in a transaction."""
        return self.method == "POST"


# ----- a call ------------------------------------------------------------------------------------------
async def run(
    manager: ResourceManager,
    action: Action,
    ctx: Context,
    key: Any,
    *,
    parent_id: Any = None,
    path: Mapping[str, str] | None = None,
    query: Any = None,
    body: Any = None,
) -> Any:
    """Parse what the call gave, load the item as the caller, and run the handler (see the module
    docstring). `query` in the API's form (a mapping of strings, a query string, `QueryParams`)."""
    values = _path_values(action, path or {})
    arguments = _query_values(action, query)
    data = None if action.body is None else validate_fields(action.body, body)

    def context(conn: Any) -> ActionContext:
        return ActionContext(
            actor=ctx.actor,
            request_id=ctx.request_id,
            conn=conn,
            resource=manager.resource,
            resources=manager.managers,
            path=values,
            query=arguments,
            body=data,
        )

    if not action.changes:
        row = await manager.get(ctx, key, parent_id=parent_id)
        async with manager.db.connection() as conn:
            return await action.handler(ctx=context(conn), row=row)
    async with manager.db.transaction() as conn:
        row = await manager.writer.lock(ctx, conn, key, parent_id=parent_id)
        result = await action.handler(ctx=context(conn), row=row)
    return result


def _path_values(action: Action, given: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for name, kind in action.params.items():
        text = given.get(name)
        try:
            if not isinstance(text, str):
                raise FieldInvalid("required", "Missing.")
            values[name] = _read(kind, text)
        except FieldInvalid:
            # A path that names nothing, like a malformed id.
            raise NotFound(f"No such {name.removesuffix('_id').replace('_', ' ')}.") from None
    return values


def _bad(name: str, code: str, message: str) -> InvalidQuery:
    return InvalidQuery(message, errors=[FieldError(name[:100], code, message)])


def _query_values(action: Action, given: Any) -> dict[str, Any]:
    """Each declared parameter, read by `_read`; an absent one holds its default (else None)."""
    if isinstance(given, Mapping) and not isinstance(given, QueryParams):
        given = [(k, str(v)) for k, v in given.items() if v is not None]
    params = given if isinstance(given, QueryParams) else QueryParams(given or "")
    for key in params:
        if key not in action.query:
            raise _bad(key, "unknown_parameter", f"{key!r} is not a parameter of {action.name}.")
    values: dict[str, Any] = {}
    for name, spec in action.query.items():
        texts = params.getlist(name)
        if len(texts) > 1:
            raise _bad(name, "repeated_parameter", f"{name} may be given only once.")
        if not texts:
            if spec.required:
                raise _bad(name, "required", f"{name} is required.")
            values[name] = spec.new_default() if spec.default is not MISSING else None
            continue
        try:
            values[name] = _read(spec.type, texts[0])
        except FieldInvalid as exc:
            raise _bad(name, "invalid_value", f"{name}: {exc.message}") from None
    return values


def _read(kind: FieldType, text: str) -> Any:
    """A parameter's text: parsed as a filter value is, then held to the type's own rules (a bound, a
    length, a pattern)."""
    return kind.check(kind.to_json(kind.parse(text)))


def answer(action: Action, result: Any) -> Response:
    """The handler's result as the HTTP answer."""
    if isinstance(result, Response):
        return result
    if isinstance(result, Page):
        return Response(result.to_json(), status_code=action.status, media_type="application/json")
    if result is None and action.status == 204:
        return empty_response(204)
    return json_response({"data": result}, status=action.status)


# ----- its OpenAPI description ---------------------------------------------------------------------------
def operation(resource: Resource, action: Action, key_parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """The action's OpenAPI operation (`key_parameters`: the item's own path parameters)."""
    parameters = [*key_parameters]
    for name, kind in action.params.items():
        parameters.append({"name": name, "in": "path", "required": True, "schema": kind.schema()})
    for name, spec in action.query.items():
        value = spec.type.schema()
        if spec.default is not MISSING and not callable(spec.default) and spec.default is not None:
            value["default"] = spec.default
        param = {"name": name, "in": "query", "required": spec.required, "schema": value}
        if spec.description:
            param["description"] = spec.description
        parameters.append(param)
    statuses = {404, *action.problems}
    if action.params or action.query:
        statuses.add(400)
    if action.changes or resource.permission or resource.policy.read_permission:
        statuses.add(403)
    out: dict[str, Any] = {"parameters": parameters}
    if action.description:
        out["description"] = action.description
    if action.body is not None:
        statuses.add(422)
        props = {n: field_schema(f) for n, f in action.body.items()}
        body: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
        required = [n for n, f in action.body.items() if f.required]
        if required:
            body["required"] = required
        out["requestBody"] = json_body(named(resource.schema_name + pascal_case(action.name), body))
    schema: dict[str, Any] | Named | None = None
    # Named, so that a generated client has one class for it (not one per operation and status).
    own_name = resource.schema_name + pascal_case(action.name)
    if action.page and action.response is not None:
        items = action.response.name if isinstance(action.response, Named) else own_name
        schema = named(f"{items}Page", page_schema(action.response))
    elif action.response is not None:
        result = action.response
        schema = data(result if isinstance(result, Named) else named(f"{own_name}Result", result))
    out["responses"] = {
        str(action.status): response(action.summary or action.name, schema),
        **problems(*sorted(statuses)),
    }
    return out
