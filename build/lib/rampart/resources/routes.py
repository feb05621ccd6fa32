"""The REST routes every resource gets, as `RouteSpec`s with their OpenAPI description."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from starlette.responses import Response

from rampart.errors import NotFound
from rampart.lib.ids import parse_uuid
from rampart.resources.conditional import etag, if_none_match_hits
from rampart.resources.endpoints import JSON_OPTIONS, Call, RouteSpec, empty_response, json_response
from rampart.resources.fields import FieldInvalid
from rampart.resources.manager import Context, ResourceManager
from rampart.resources.openapi_schema import (
    create_schema,
    item_schema,
    list_parameters,
    problem_responses,
    update_schema,
)

API_PREFIX = "/api/v1"


def _context(call: Call) -> Context:
    return Context(actor=call.user, request_id=call.request_id)


def resource_routes(manager: ResourceManager) -> list[RouteSpec]:
    """GET/POST on the collection, GET/PATCH/DELETE on an item, limited to the declared operations."""
    res = manager.resource
    ops = res.operations
    key_field = res.all_fields[res.key].type
    if res.parent is not None:
        parent = manager.managers[res.parent.resource].resource
        collection = f"{API_PREFIX}/{parent.path}/{{parent_id}}/{res.path}"
    else:
        collection = f"{API_PREFIX}/{res.path}"
    item = f"{collection}/{{{res.key}}}"
    tag = (res.name,)
    name_item = res.name

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
            raise NotFound(f"No such {name_item} item.") from None

    def location(row: dict[str, Any], call: Call) -> str:
        # The matched path itself (the router only matches plain segments): building `request.url` parses
        # the Host header and the whole URL, for one path.
        return f"{call.request.scope['path'].rstrip('/')}/{row[res.key]}"

    async def list_items(call: Call) -> Any:
        query_string: bytes = call.request.scope["query_string"]
        body = await manager.list_json(_context(call), query_string, parent_id=parent_of(call))
        return Response(body, media_type="application/json")

    async def create_item(call: Call) -> Any:
        body = call.json()
        row = await manager.create(_context(call), body, parent_id=parent_of(call))
        headers = {"Location": location(row, call), "ETag": etag(row["version"])}
        return json_response({"data": row}, status=201, headers=headers)

    async def get_item(call: Call) -> Any:
        parent_id = parent_of(call)
        if parent_id is not None:
            row = await manager.get(_context(call), key_of(call), parent_id=parent_id)
            version, payload = row["version"], orjson.dumps(row, option=JSON_OPTIONS)
        else:  # the row cache keeps rows encoded: a hit is sent as it is
            version, payload = await manager.get_json(_context(call), key_of(call))
        tag_value = etag(version)
        if if_none_match_hits(call.request.headers.get("if-none-match"), version):
            return empty_response(304, {"ETag": tag_value})
        return Response(
            b'{"data":' + payload + b"}", headers={"ETag": tag_value}, media_type="application/json"
        )

    async def update_item(call: Call) -> Any:
        parent_id = parent_of(call)
        key = key_of(call)
        body = call.json()
        row = await manager.update(
            _context(call), key, body, if_match=call.request.headers.get("if-match"), parent_id=parent_id
        )
        return json_response({"data": row}, headers={"ETag": etag(row["version"])})

    async def delete_item(call: Call) -> Any:
        parent_id = parent_of(call)
        key = key_of(call)
        await manager.delete(
            _context(call), key, if_match=call.request.headers.get("if-match"), parent_id=parent_id
        )
        return empty_response(204)

    path_params = _path_parameters(res.parent is not None, res.key)
    # A route-level permission (e.g. users:manage) answers 403 to callers whose role lacks it, reads included.
    read_errors = (400, 401, 403, 404, 429) if res.permission else (400, 401, 404, 429)
    schema_ref = item_schema(res)
    routes = []
    if "list" in ops:
        routes.append(
            RouteSpec(
                "GET",
                collection,
                list_items,
                f"{res.name}.list",
                tags=tag,
                permission=res.permission,
                summary=f"List visible {res.name}",
                openapi={
                    "parameters": path_params[:-1] + list_parameters(res),
                    "responses": {"200": _list_response(schema_ref), **problem_responses(*read_errors)},
                },
            )
        )
    if "create" in ops:
        routes.append(
            RouteSpec(
                "POST",
                collection,
                create_item,
                f"{res.name}.create",
                tags=tag,
                permission=res.permission,
                summary=f"Create a {res.name} item",
                openapi={
                    "parameters": path_params[:-1],
                    "requestBody": _body(create_schema(res)),
                    "responses": {
                        "201": _item_response(schema_ref, "Created"),
                        **problem_responses(400, 401, 403, 404, 409, 413, 415, 422, 429),
                    },
                },
            )
        )
    if "get" in ops:
        routes.append(
            RouteSpec(
                "GET",
                item,
                get_item,
                f"{res.name}.get",
                tags=tag,
                permission=res.permission,
                summary=f"Get one {res.name} item",
                openapi={
                    "parameters": [*path_params, _header("If-None-Match")],
                    "responses": {
                        "200": _item_response(schema_ref, "The item"),
                        "304": {"description": "Not modified"},
                        **problem_responses(*read_errors[1:]),
                    },
                },
            )
        )
    if "update" in ops:
        routes.append(
            RouteSpec(
                "PATCH",
                item,
                update_item,
                f"{res.name}.update",
                tags=tag,
                permission=res.permission,
                summary=f"Change a {res.name} item",
                openapi={
                    "parameters": [*path_params, _header("If-Match")],
                    "requestBody": _body(update_schema(res)),
                    "responses": {
                        "200": _item_response(schema_ref, "The changed item"),
                        **problem_responses(400, 401, 403, 404, 409, 412, 413, 415, 422, 429),
                    },
                },
            )
        )
    if "delete" in ops:
        routes.append(
            RouteSpec(
                "DELETE",
                item,
                delete_item,
                f"{res.name}.delete",
                tags=tag,
                permission=res.permission,
                summary=f"Delete a {res.name} item",
                openapi={
                    "parameters": [*path_params, _header("If-Match")],
                    "responses": {
                        "204": {"description": "Deleted"},
                        **problem_responses(401, 403, 404, 412, 429),
                    },
                },
            )
        )
    return routes


def _path_parameters(nested: bool, key: str) -> list[dict[str, Any]]:
    params = []
    if nested:
        params.append(
            {
                "name": "parent_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "format": "uuid"},
            }
        )
    params.append({"name": key, "in": "path", "required": True, "schema": {"type": "string"}})
    return params


def _header(name: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _item_response(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": ["data"], "properties": {"data": schema}}
            }
        },
    }


def _list_response(schema: dict[str, Any]) -> dict[str, Any]:
    meta = {
        "type": "object",
        "required": ["next_cursor", "limit"],
        "properties": {
            "next_cursor": {"type": ["string", "null"]},
            "limit": {"type": "integer"},
            "total": {"type": "integer"},
        },
    }
    return {
        "description": "A page of items",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["data", "meta"],
                    "properties": {"data": {"type": "array", "items": schema}, "meta": meta},
                }
            }
        },
    }
