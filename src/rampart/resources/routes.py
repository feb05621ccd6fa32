"""The REST routes every resource gets, as `RouteSpec`s with their OpenAPI description."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from starlette.datastructures import QueryParams
from starlette.responses import Response

from rampart.lib.ids import parse_uuid
from rampart.resources import actions
from rampart.resources.actions import operation as action_operation
from rampart.resources.conditional import check_precondition, etag, if_none_match_hits
from rampart.resources.endpoints import (
    JSON_OPTIONS,
    Call,
    Handler,
    RouteSpec,
    empty_response,
    json_response,
)
from rampart.resources.fields import FieldInvalid
from rampart.resources.manager import ResourceManager
from rampart.resources.openapi_parts import data, json_body, problems, ref, response
from rampart.resources.openapi_schema import (
    SPARSE_JSON,
    article,
    key_parameter,
    list_parameters,
    parent_parameter,
    schemas,
    words,
)
from rampart.resources.spec import Resource

API_PREFIX = "/api/v1"


def _sparse(query_string: bytes) -> bool:
    """Whether a list asks for sparse fields (its page is then SPARSE_JSON). The byte test keeps the parse
    off the path of every other list."""
    return b"fields" in query_string and "fields" in QueryParams(query_string)


def resource_routes(manager: ResourceManager) -> list[RouteSpec]:
    """GET/POST on the collection, GET/PATCH/DELETE on an item, limited to the declared operations."""
    res = manager.resource
    key_field = res.all_fields[res.key].type
    parent = manager.managers[res.parent.resource].resource if res.parent is not None else None

    def parent_of(call: Call) -> uuid.UUID | None:
        if res.parent is None:
            return None
        parsed = parse_uuid(call.path["parent_id"])
        if parsed is None:
            raise manager.managers[res.parent.resource].not_found()
        return parsed

    def key_of(call: Call) -> Any:
        try:
            return key_field.parse(call.path[res.key])
        except FieldInvalid:
            raise manager.not_found() from None

    def if_match(call: Call) -> str | None:
        header = call.request.headers.get("if-match")
        check_precondition("If-Match", header)
        return header

    def location(row: dict[str, Any], call: Call) -> str:
        # The matched path itself (the router only matches plain segments): building `request.url` parses
        # the Host header and the whole URL, for one path.
        return f"{call.request.scope['path'].rstrip('/')}/{row[res.key]}"

    async def list_items(call: Call) -> Response:
        query_string: bytes = call.request.scope["query_string"]
        body = await manager.list_json(call.context, query_string, parent_id=parent_of(call))
        return Response(body, media_type=SPARSE_JSON if _sparse(query_string) else "application/json")

    async def create_item(call: Call) -> Response:
        body = call.json()
        row = await manager.create(call.context, body, parent_id=parent_of(call))
        headers = {"Location": location(row, call), "ETag": etag(row["version"])}
        return json_response({"data": row}, status=201, headers=headers)

    async def get_item(call: Call) -> Response:
        parent_id = parent_of(call)
        key = key_of(call)
        if_none_match = call.request.headers.get("if-none-match")
        check_precondition("If-None-Match", if_none_match)
        if parent_id is not None:
            row = await manager.get(call.context, key, parent_id=parent_id)
            version, payload = row["version"], orjson.dumps(row, option=JSON_OPTIONS)
        else:  # the row cache keeps rows encoded: a hit is sent as it is
            version, payload = await manager.get_json(call.context, key)
        tag_value = etag(version)
        if if_none_match_hits(if_none_match, version):
            return empty_response(304, {"ETag": tag_value})
        return Response(
            b'{"data":' + payload + b"}", headers={"ETag": tag_value}, media_type="application/json"
        )

    async def update_item(call: Call) -> Response:
        parent_id = parent_of(call)
        key = key_of(call)
        precondition = if_match(call)
        body = call.json()
        row = await manager.update(call.context, key, body, if_match=precondition, parent_id=parent_id)
        return json_response({"data": row}, headers={"ETag": etag(row["version"])})

    async def delete_item(call: Call) -> Response:
        parent_id = parent_of(call)
        key = key_of(call)
        await manager.delete(call.context, key, if_match=if_match(call), parent_id=parent_id)
        return empty_response(204)

    def act(action: actions.Action) -> Handler:
        async def act_on_item(call: Call) -> Response:
            parent_id = parent_of(call)
            key = key_of(call)
            result = await manager.act(
                call.context,
                action.name,
                key,
                parent_id=parent_id,
                path={name: call.path[name] for name in action.params},
                query=call.request.query_params,
                body=call.json() if action.body is not None else None,
            )
            return actions.answer(action, result)

        return act_on_item

    handlers = {action.name: act(action) for action in res.actions}
    return routes_of(
        res, parent, list_items, create_item, get_item, update_item, delete_item, action_handlers=handlers
    )


def routes_of(
    res: Resource,
    parent: Resource | None,
    list_items: Handler,
    create_item: Handler,
    get_item: Handler,
    update_item: Handler,
    delete_item: Handler,
    *,
    action_handlers: dict[str, Handler],
) -> list[RouteSpec]:
    """The resource's declared operations with their OpenAPI description, generated from the declaration."""
    collection = _collection_path(res, parent)
    item = f"{collection}/{{{res.key}}}"
    named = schemas(res)
    noun = words(res)
    a_noun = article(noun)
    about = f" {res.description}" if res.description else ""
    within = [parent_parameter(parent)] if parent is not None else []
    key = [*within, key_parameter(res)]
    # A route-level permission (e.g. users:manage) answers 403 to callers whose role lacks it, reads included.
    read_problems = (403,) if res.permission or res.policy.read_permission else ()
    nested = (404,) if parent is not None else ()  # the parent is absent or not visible
    etag_headers = ("ETag",)

    def spec(method: str, path: str, handler: Handler, op: str, summary: str, **openapi: Any) -> RouteSpec:
        return RouteSpec(
            method,
            path,
            handler,
            f"{res.name}.{op}",
            tags=(res.name,),
            permission=res.permission,
            summary=summary,
            openapi=openapi,
        )

    operations = {
        "list": spec(
            "GET",
            collection,
            list_items,
            "list",
            f"List {res.name}",
            description=f"The {res.name} the caller may see, a page at a time.{about} Filter with the "
            "query parameters below; page on with `cursor=<meta.next_cursor>`.",
            parameters=[*within, *list_parameters(res)],
            responses={
                "200": {
                    "description": f"A page of {res.name}",
                    "content": {
                        "application/json": {"schema": named["page"]},
                        SPARSE_JSON: {"schema": named["fields_page"]},
                    },
                },
                **problems(400, *read_problems, *nested),
            },
        ),
        "create": spec(
            "POST",
            collection,
            create_item,
            "create",
            f"Create {a_noun}",
            description=f"Create {a_noun}.{about} Server-owned fields (`id`, `created_at`, ...) and "
            "unknown fields are refused (422).",
            parameters=within,
            requestBody=json_body(named["create"]),
            responses={
                "201": response(
                    f"The new {noun}"
                    + (", with its write-only fields, shown this once" if res.write_only else ""),
                    data(named.get("created", named["item"])),
                    header_names=("Location", *etag_headers),
                ),
                **problems(400, 403, *nested, 409, 422),
            },
        ),
        "get": spec(
            "GET",
            item,
            get_item,
            "get",
            f"Get {a_noun}",
            description=f"One {noun}, with its version as the ETag.{about} Absent and not visible are "
            "both 404.",
            parameters=[*key, ref("parameters", "If-None-Match")],
            responses={
                "200": response(f"The {noun}", data(named["item"]), header_names=etag_headers),
                "304": response(
                    "Not modified: If-None-Match names the current version",
                    None,
                    header_names=etag_headers,
                ),
                **problems(400, *read_problems, 404),
            },
        ),
        "update": spec(
            "PATCH",
            item,
            update_item,
            "update",
            f"Change {a_noun}",
            description=f"Change some fields of {a_noun}; `version` grows by one.{about} With If-Match, "
            "the change is made only if the item is still at that version (412 otherwise).",
            parameters=[*key, ref("parameters", "If-Match")],
            requestBody=json_body(named["update"]),
            responses={
                "200": response(f"The changed {noun}", data(named["item"]), header_names=etag_headers),
                **problems(400, 403, 404, 409, 412, 422),
            },
        ),
        "delete": spec(
            "DELETE",
            item,
            delete_item,
            "delete",
            f"Delete {a_noun}",
            description=f"Delete {a_noun}, and what references it with ON DELETE CASCADE.{about}",
            parameters=[*key, ref("parameters", "If-Match")],
            responses={
                "204": response("Deleted"),
                # 409: still referenced by items whose reference is ON DELETE RESTRICT
                **problems(400, 403, 404, 409, 412),
            },
        ),
    }
    routes = [route for op, route in operations.items() if op in res.operations]
    return routes + [
        spec(
            action.method,
            f"{item}/{action.path}",
            action_handlers[action.name],
            action.name,
            action.summary or action.name.replace("_", " ").capitalize(),
            **action_operation(res, action, key),
        )
        for action in res.actions
    ]


def _collection_path(res: Resource, parent: Resource | None) -> str:
    if parent is not None:
        return f"{API_PREFIX}/{parent.path}/{{parent_id}}/{res.path}"
    return f"{API_PREFIX}/{res.path}"
