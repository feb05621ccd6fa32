"""The pages of every declared resource: list (the query language as form controls), detail, create,
edit, delete. Every read and write is the resource manager's, as the signed-in admin (or the user they act
as): the same validation, policies, hooks and events as the API."""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import urlencode

from starlette.responses import JSONResponse, Response

from rampart.console import PREFIX
from rampart.console.forms import Control, body_of, control, form_values, humanize, label_field
from rampart.console.pages import Pages, context, display_time, redirect, require
from rampart.console.users import user_extras
from rampart.errors import (
    FieldError,
    InvalidQuery,
    NotFound,
    PreconditionFailed,
    RampartError,
    ValidationFailed,
)
from rampart.events.log import LogQuery
from rampart.lib.ids import parse_uuid
from rampart.resources.endpoints import Call, RouteSpec
from rampart.resources.fields import Boolean, Choice, FieldInvalid, Reference, Text, Timestamp
from rampart.resources.manager import ResourceManager
from rampart.resources.query import MAX_LIMIT
from rampart.resources.routes import API_PREFIX
from rampart.resources.spec import MISSING, Field, Resource

_FILTER_KEY = re.compile(r"^([a-z_][a-z0-9_]*)")
_OPERATOR_TEXT = {
    "eq": "is",
    "ne": "is not",
    "gt": "after / more than",
    "gte": "from / at least",
    "lt": "before / less than",
    "lte": "until / at most",
    "in": "is one of (a,b,c)",
    "contains": "contains",
    "is": "is null / not_null",
}
PICKER_LIMIT = 100
NEWEST_FIRST = "-id"
_COLUMNS = 7  # columns of a list besides the id


def _base(resource: Resource) -> str:
    return f"{PREFIX}/resources/{resource.name}"


def _columns(resource: Resource) -> list[str]:
    """The fields a list shows: the declared ones (long texts left out), then when it was created."""
    declared = [
        name
        for name, spec in resource.shown_fields.items()
        if name not in ("id", "created_at", "updated_at", "version")
        and not (isinstance(spec.type, Text) and spec.type.max_length > 300)
    ]
    return [*declared[:_COLUMNS], "created_at"]


class ResourcePages:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.managers = pages.parts.managers

    def manager(self, call: Call) -> ResourceManager:
        manager = self.managers.get(call.path["name"])
        if manager is None:
            raise NotFound("No such resource.")
        if manager.resource.permission:  # what the resource's API routes require, the console does too
            call.user.require(manager.resource.permission)
        return manager

    def parent_of(self, call: Call, manager: ResourceManager, *, required: bool) -> uuid.UUID | None:
        resource = manager.resource
        if resource.parent is None:
            return None
        raw = call.request.query_params.get("parent") or call.form().get("parent") or ""
        parent_id = parse_uuid(raw)
        if parent_id is None and required:
            parent = resource.parent.resource
            raise InvalidQuery(
                f"Choose the {parent} item first.",
                errors=[FieldError("parent", "required", f"Choose a {parent} item.")],
            )
        return parent_id

    def key_of(self, call: Call, manager: ResourceManager) -> Any:
        resource = manager.resource
        try:
            return resource.all_fields[resource.key].type.parse(call.path["key"])
        except FieldInvalid:
            raise manager.not_found() from None

    def item_href(self, resource: Resource, row: dict[str, Any], parent_id: uuid.UUID | None) -> str:
        tail = f"?parent={parent_id}" if parent_id is not None else ""
        return f"{_base(resource)}/{row[resource.key]}{tail}"

    # ----- pickers: rows of a referenced resource the caller can see ---------------------------------
    async def options(
        self, call: Call, target: str, *, search: str = "", current: Any = None
    ) -> tuple[list[tuple[str, str]], bool]:
        """Up to PICKER_LIMIT rows of `target` the caller may see, as (id, text); and whether more exist."""
        manager = self.managers[target]
        resource = manager.resource
        if "list" not in resource.operations or resource.parent is not None:
            return [], False
        if resource.permission and not call.user.can(resource.permission):
            return [], False
        label = label_field(resource)
        params: dict[str, str] = {
            "limit": str(PICKER_LIMIT),
            "fields": ",".join(filter(None, ["id", label])),
            "sort": NEWEST_FIRST,
        }
        if label and search and "contains" in resource.all_fields[label].operators:
            params[f"{label}[contains]"] = search
        elif search:
            return [], False
        try:
            page = await manager.list(context(call), params)
        except RampartError:
            return [], False
        rows = [(str(r["id"]), _option_text(r, label)) for r in page.items]
        if current and all(value != str(current) for value, _ in rows):
            try:
                row = await manager.get(context(call), current)
                rows.insert(0, (str(row["id"]), _option_text(row, label)))
            except RampartError:
                rows.insert(0, (str(current), str(current)))
        return rows, page.next_cursor is not None

    async def controls(
        self, call: Call, fields: dict[str, Field], values: dict[str, Any], errors: dict[str, str]
    ) -> list[Control]:
        out = []
        for name, spec in fields.items():
            ctl = control(name, spec, values.get(name))
            ctl.error = errors.get(name, "")
            if isinstance(spec.type, Reference):
                options, more = await self.options(call, spec.type.target, current=values.get(name) or None)
                if spec.nullable or not spec.required:
                    options.insert(0, ("", "(none)"))
                ctl.options = options
                ctl.picker = spec.type.target if more else ""
            out.append(ctl)
        return out

    # ----- list --------------------------------------------------------------------------------------
    async def list_page(self, call: Call) -> Response:
        require(call)
        manager = self.manager(call)
        resource = manager.resource
        if "list" not in resource.operations:
            raise NotFound(f"{resource.name} cannot be listed.")
        query = call.request.query_params
        filters = []
        api: dict[str, str] = {}
        for name, spec in resource.all_fields.items():
            if not spec.operators:
                continue
            op = query.get(f"op.{name}") or spec.operators[0]
            if op not in spec.operators:
                op = spec.operators[0]
            value = query.get(name, "")
            if value != "":
                api[name if op == "eq" else f"{name}[{op}]"] = value
            options = None
            if isinstance(spec.type, Choice):
                options = list(spec.type.values)
            elif isinstance(spec.type, Boolean):
                options = ["true", "false"]
            filters.append(
                {
                    "name": name,
                    "label": humanize(name) if name != "id" else "ID",
                    # Filters of the fields the framework adds (id, owner, times) wait under "More filters".
                    "more": name not in resource.fields,
                    "op": op,
                    "ops": [(o, _OPERATOR_TEXT.get(o, o)) for o in spec.operators],
                    "value": value,
                    "options": options,
                    "error": "",
                }
            )
        sortable = [n for n, s in resource.all_fields.items() if s.sort]
        sort = query.get("sort", "")
        # Newest first by default, by id: ids are UUIDv7 (time-ordered), and the primary key's index serves
        # the order on any table, where the resource's own default sort may have none (a 100,000-row
        # table sorted without an index costs a full scan: decision 0023).
        api["sort"] = sort or NEWEST_FIRST
        limit = query.get("limit", "")
        if limit:
            api["limit"] = limit
        count = query.get("total") == "on"
        if count:
            api["include_total"] = "true"
        cursor = query.get("cursor", "")
        if cursor:
            api["cursor"] = cursor
        parent_id = self.parent_of(call, manager, required=False)
        parents: list[tuple[str, str]] = []
        if resource.parent is not None:
            parents, _ = await self.options(call, resource.parent.resource, current=parent_id)
        errors: list[FieldError] = []
        page = None
        if resource.parent is None or parent_id is not None:
            try:
                page = await manager.list(context(call), api, parent_id=parent_id)
            except InvalidQuery as exc:
                errors = exc.errors or [FieldError("", exc.code, exc.detail)]
        by_field = {}
        for error in errors:
            match = _FILTER_KEY.match(error.field)
            by_field[match.group(1) if match else error.field] = error.message
        for flt in filters:
            flt["error"] = by_field.pop(flt["name"], "")
        shown_query = {k: v for k, v in query.items() if k not in ("cursor", "done")}
        api_shown = {k: v for k, v in api.items() if k != "cursor"}
        columns = _columns(resource)
        rows = []
        if page is not None:
            for row in page.items:
                href = self.item_href(resource, row, parent_id) if "get" in resource.operations else None
                rows.append({"href": href, "key": row[resource.key], "cells": [row.get(c) for c in columns]})
        collection = (
            f"{API_PREFIX}/{self.managers[resource.parent.resource].resource.path}/{parent_id}/{resource.path}"
            if resource.parent is not None
            else f"{API_PREFIX}/{resource.path}"
        )
        return await self.pages.render(
            call,
            "list.html",
            title=resource.name.replace("_", " ").capitalize(),
            resource=resource,
            base=_base(resource),
            filters=filters,
            sortable=sortable,
            sort=sort,
            limit=limit,
            limits=("20", "50", str(MAX_LIMIT)),
            count=count,
            columns=columns,
            rows=rows,
            page=page,
            current=shown_query,
            other_errors=list(by_field.items()),
            api_query=f"GET {collection}" + ("?" + urlencode(api_shown) if api_shown else ""),
            parent_id=parent_id,
            parents=parents,
            can_create="create" in resource.operations,
            can_delete="delete" in resource.operations,
        )

    # ----- detail ------------------------------------------------------------------------------------
    async def detail_page(self, call: Call) -> Response:
        require(call)
        manager = self.manager(call)
        resource = manager.resource
        if "get" not in resource.operations:
            raise NotFound(f"{resource.name} items have no page of their own.")
        parent_id = self.parent_of(call, manager, required=False)
        key = self.key_of(call, manager)
        row = await manager.get(context(call), key, parent_id=parent_id)
        return await self._detail(call, manager, row, parent_id)

    async def _detail(
        self,
        call: Call,
        manager: ResourceManager,
        row: dict[str, Any],
        parent_id: uuid.UUID | None,
        *,
        once: dict[str, Any] | None = None,
    ) -> Response:
        """An item's page; `once`: the write-only values of an item just created, shown this once."""
        actor = require(call)
        resource = manager.resource
        fields = []
        for name, spec in resource.shown_fields.items():
            value = row.get(name)
            link = None
            if isinstance(spec.type, Reference) and value is not None:
                target = self.managers[spec.type.target].resource
                if "get" in target.operations and target.parent is None:
                    link = f"{_base(target)}/{value}"
            shown = value
            if isinstance(spec.type, Timestamp):
                shown = display_time(value)
            elif isinstance(spec.type, Boolean) and value is not None:
                shown = "yes" if value else "no"
            elif isinstance(value, list):
                shown = ", ".join(map(str, value))
            fields.append(
                {
                    "name": name,
                    "label": humanize(name) if name != "id" else "ID",
                    "value": shown,
                    "link": link,
                    "long": isinstance(spec.type, Text) and spec.type.max_length > 300,
                }
            )
        history, _ = await self.pages.parts.event_log.page(
            actor, LogQuery(resource=resource.name, resource_id=str(row["id"]), limit=20)
        )
        extras = None
        if resource.name == "users":
            extras = await user_extras(self.pages, call, row)
        return await self.pages.render(
            call,
            "detail.html",
            title=f"{resource.name.capitalize()}: {_option_text(row, label_field(resource))}",
            resource=resource,
            base=_base(resource),
            row=row,
            fields=fields,
            history=history,
            href=self.item_href(resource, row, parent_id),
            parent_id=parent_id,
            can_update="update" in resource.operations,
            can_delete="delete" in resource.operations,
            extras=extras,
            once=[(humanize(n), v) for n, v in (once or {}).items()],
        )

    # ----- create and edit ---------------------------------------------------------------------------
    def _create_fields(self, resource: Resource) -> dict[str, Field]:
        parent = resource.parent.field if resource.parent is not None else None
        return {n: f for n, f in resource.writable_fields.items() if n != parent}

    def _edit_fields(self, resource: Resource) -> dict[str, Field]:
        return {n: f for n, f in self._create_fields(resource).items() if not f.immutable}

    async def _form(
        self,
        call: Call,
        manager: ResourceManager,
        *,
        row: dict[str, Any] | None,
        values: dict[str, Any],
        errors: dict[str, str],
        detail: str = "",
        status: int = 200,
    ) -> Response:
        resource = manager.resource
        editing = row is not None
        fields = self._edit_fields(resource) if editing else self._create_fields(resource)
        parent_id = self.parent_of(call, manager, required=False)
        parents: list[tuple[str, str]] = []
        if resource.parent is not None and not editing:
            parents, _ = await self.options(call, resource.parent.resource, current=parent_id)
        controls = await self.controls(call, fields, values, errors)
        known = set(fields) | {"parent"}
        other = [(f or "form", m) for f, m in errors.items() if f not in known]
        title = f"Edit {resource.name} item" if editing else f"New {resource.name} item"
        action = f"{_base(resource)}/new" if row is None else f"{_base(resource)}/{row[resource.key]}/edit"
        if parent_id is not None:
            action += f"?parent={parent_id}"
        return await self.pages.render(
            call,
            "form.html",
            title=title,
            status=status,
            resource=resource,
            base=_base(resource),
            controls=controls,
            action=action,
            version=row["version"] if row is not None else None,
            other_errors=other,
            detail=detail,
            parents=parents,
            parent_id=parent_id,
            parent_error=errors.get("parent", ""),
            cancel=self.item_href(resource, row, parent_id) if row is not None else _base(resource),
        )

    async def new_page(self, call: Call) -> Response:
        require(call)
        manager = self.manager(call)
        if "create" not in manager.resource.operations:
            raise NotFound(f"{manager.resource.name} items cannot be created.")
        fields = self._create_fields(manager.resource)
        # A generated default (a function) is made on create: the form leaves the field empty.
        defaults = {
            n: f.default for n, f in fields.items() if f.default is not MISSING and not callable(f.default)
        }
        return await self._form(call, manager, row=None, values=defaults, errors={})

    async def create(self, call: Call) -> Response:
        require(call)
        manager = self.manager(call)
        resource = manager.resource
        if "create" not in resource.operations:
            raise NotFound(f"{resource.name} items cannot be created.")
        form = call.form()
        fields = self._create_fields(resource)
        try:
            parent_id = self.parent_of(call, manager, required=True)
            row = await manager.create(context(call), body_of(form, fields), parent_id=parent_id)
        except (ValidationFailed, InvalidQuery) as exc:
            return await self._form(
                call,
                manager,
                row=None,
                values=form_values(form, fields),
                errors={e.field: e.message for e in exc.errors},
                detail=exc.detail,
            )
        if resource.write_only and "get" in resource.operations:
            # The answer to the POST itself shows what is never shown again (reloading it posts nothing).
            once = {n: row[n] for n in resource.write_only if n in row}
            return await self._detail(call, manager, row, parent_id, once=once)
        if "get" in resource.operations:
            return redirect(
                self.item_href(resource, row, parent_id).split("?")[0], done="created", parent=parent_id
            )
        return redirect(_base(resource), done="created", parent=parent_id)

    async def edit_page(self, call: Call) -> Response:
        require(call)
        manager = self.manager(call)
        if "update" not in manager.resource.operations:
            raise NotFound(f"{manager.resource.name} items cannot be changed.")
        parent_id = self.parent_of(call, manager, required=False)
        row = await manager.get(context(call), self.key_of(call, manager), parent_id=parent_id)
        return await self._form(call, manager, row=row, values=dict(row), errors={})

    async def update(self, call: Call) -> Response:
        require(call)
        manager = self.manager(call)
        resource = manager.resource
        if "update" not in resource.operations:
            raise NotFound(f"{resource.name} items cannot be changed.")
        parent_id = self.parent_of(call, manager, required=False)
        key = self.key_of(call, manager)
        current = await manager.get(context(call), key, parent_id=parent_id)
        form = call.form()
        fields = self._edit_fields(resource)
        version = form.get("version", "")
        try:
            await manager.update(
                context(call),
                key,
                body_of(form, fields, current=current),
                if_match=f'"{version}"' if version.isdigit() else None,
                parent_id=parent_id,
            )
        except (ValidationFailed, PreconditionFailed) as exc:
            errors = {e.field: e.message for e in exc.errors}
            if isinstance(exc, PreconditionFailed):
                errors["form"] = "Someone changed this item since you opened the form; reload it to see."
            return await self._form(
                call,
                manager,
                row=current,
                values=form_values(form, fields),
                errors=errors,
                detail=exc.detail,
            )
        return redirect(
            self.item_href(resource, current, parent_id).split("?")[0], done="saved", parent=parent_id
        )

    # ----- delete ------------------------------------------------------------------------------------
    async def delete_page(self, call: Call) -> Response:
        require(call)
        manager = self.manager(call)
        resource = manager.resource
        if "delete" not in resource.operations:
            raise NotFound(f"{resource.name} items cannot be deleted.")
        parent_id = self.parent_of(call, manager, required=False)
        key = self.key_of(call, manager)
        row = None
        if "get" in resource.operations:
            row = await manager.get(context(call), key, parent_id=parent_id)
        return await self.pages.render(
            call,
            "confirm.html",
            title=f"Delete this {resource.name} item?",
            message=(
                f"{resource.name.capitalize()} item {_option_text(row, label_field(resource)) or key}"
                " will be deleted, with every item that depends on it. This cannot be undone."
            ),
            action=f"{_base(resource)}/{key}/delete" + (f"?parent={parent_id}" if parent_id else ""),
            button="Delete",
            danger=True,
            cancel=self.item_href(resource, row, parent_id) if row else _base(resource),
        )

    async def delete(self, call: Call) -> Response:
        require(call)
        manager = self.manager(call)
        if "delete" not in manager.resource.operations:
            raise NotFound(f"{manager.resource.name} items cannot be deleted.")
        parent_id = self.parent_of(call, manager, required=False)
        await manager.delete(context(call), self.key_of(call, manager), parent_id=parent_id)
        return redirect(_base(manager.resource), done="deleted", parent=parent_id)

    # ----- the picker's search (JSON, for console.js) ------------------------------------------------
    async def picker(self, call: Call) -> Response:
        require(call)
        target = call.path["name"]
        if target not in self.managers:
            raise NotFound("No such resource.")
        search = call.request.query_params.get("q", "")[:200]
        options, more = await self.options(call, target, search=search)
        return JSONResponse(
            {"data": [{"id": v, "text": t} for v, t in options], "more": more},
            headers={"Cache-Control": "no-store"},
        )


def _option_text(row: dict[str, Any] | None, label: str | None) -> str:
    if row is None:
        return ""
    ident = str(row.get("id", ""))[:8]
    if label and row.get(label):
        return f"{row[label]} ({ident})"
    return ident


def resource_routes(pages: Pages) -> list[RouteSpec]:
    view = ResourcePages(pages)
    base = f"{PREFIX}/resources/{{name}}"

    def route(method: str, path: str, handler: Any, name: str) -> RouteSpec:
        return RouteSpec(method, path, handler, name, browser=True)

    return [
        route("GET", f"{PREFIX}/picker/{{name}}", view.picker, "console.picker"),
        route("GET", base, view.list_page, "console.list"),
        route("GET", f"{base}/new", view.new_page, "console.new"),
        route("POST", f"{base}/new", view.create, "console.create"),
        route("GET", f"{base}/{{key}}", view.detail_page, "console.detail"),
        route("GET", f"{base}/{{key}}/edit", view.edit_page, "console.edit"),
        route("POST", f"{base}/{{key}}/edit", view.update, "console.update"),
        route("GET", f"{base}/{{key}}/delete", view.delete_page, "console.delete_confirm"),
        route("POST", f"{base}/{{key}}/delete", view.delete, "console.delete"),
    ]
