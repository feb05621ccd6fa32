"""Writing a resource's rows: create, update and delete, each with its checks (validation, permissions,
visibility, writability, references, `If-Match`), the resource's hooks, and its event written in the same
transaction as the change. Without hooks a create or an update is one statement (decision 0011); with one,
a transaction the hook takes part in. Subscribers hear of a change only after it commits.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from rampart.db.outbox import event_insert_from, new_event, write_event
from rampart.db.pool import Database
from rampart.db.replicas import Replicas
from rampart.errors import Conflict, FieldError, Forbidden, PreconditionFailed, ValidationFailed
from rampart.lib.bus import EventBus
from rampart.resources.caching import Announcer, CacheFeed
from rampart.resources.conditional import if_match_fails
from rampart.resources.context import Context, HookContext
from rampart.resources.fields import Reference
from rampart.resources.reads import Reads
from rampart.resources.rules import AccessRules
from rampart.resources.selects import TableSQL, where_sql
from rampart.resources.spec import Binder, Resource
from rampart.resources.validation import WHOLE_BODY, validate_create, validate_update

if TYPE_CHECKING:
    from rampart.resources.manager import ResourceManager

Row = dict[str, Any]


class Writes:
    """Every write of one resource."""

    def __init__(
        self,
        resource: Resource,
        *,
        table: TableSQL,
        rules: AccessRules,
        reader: Reads,
        managers: Mapping[str, ResourceManager],
        db: Database,
        bus: EventBus,
        feed: CacheFeed | None = None,
        announcer: Announcer | None = None,
        replicas: Replicas | None = None,
    ) -> None:
        self.resource = resource
        self.table = table
        self.rules = rules
        self.reader = reader
        self.managers = managers
        self.db = db
        self.bus = bus
        # The row cache of this worker hears of each committed change at once; the announcer tells every
        # other worker and instance (without one, behind a transaction-mode pooler, the tables' triggers do).
        self.feed = feed
        self.announcer = announcer
        # With read replicas, a writer's next reads must see its write: it leaves its mark.
        self.replicas = replicas
        # Without hooks a create or an update is one statement (checks, change and event together), no
        # BEGIN/COMMIT round trips; with a hook it runs in the transaction the hook runs in. Both paths
        # answer alike (tests/resources/test_hooks.py runs every scenario on both).
        hooks = resource.hooks
        self._one_statement_create = hooks.before_create is None and hooks.after_create is None
        self._one_statement_update = hooks.before_update is None and hooks.after_update is None

    async def _hook(self, name: str, ctx: Context, conn: asyncpg.Connection, **arguments: Any) -> None:
        """Run the declared hook `name` (see `rampart.resources.spec.Hooks`), if any, inside the write."""
        hook = getattr(self.resource.hooks, name)
        if hook is not None:
            await hook(
                ctx=HookContext(
                    actor=ctx.actor,
                    request_id=ctx.request_id,
                    conn=conn,
                    resource=self.resource,
                    resources=self.managers,
                ),
                **arguments,
            )

    async def create(self, ctx: Context, body: Any, *, parent_id: uuid.UUID | None = None) -> Row:
        """Validate and insert a row; returns it as clients see it."""
        if self.resource.policy.create_permission:
            ctx.actor.require(self.resource.policy.create_permission)
        data = validate_create(self.resource, body, parent_set=parent_id is not None)
        if parent_id is not None and self.resource.parent is not None:
            data[self.resource.parent.field] = parent_id
        data["id"] = data.get("id") or _new_key()
        if self.resource.owner_field:
            data[self.resource.owner_field] = ctx.actor.user_id
        if parent_id is None and self._one_statement_create and not self.db.in_transaction():
            row = await self._create_at_once(ctx, data)
            if row is not None:
                return row
        async with self.db.transaction() as conn:
            if parent_id is not None:
                await self.reader.require_parent(ctx, parent_id, manage=True, conn=conn)
            await self._hook("before_create", ctx, conn, data=data)
            await self.check_references(ctx, conn, data)
            names = list(data)
            bind = Binder()
            values = ", ".join(bind(data[n]) for n in names)
            sql = (
                f"INSERT INTO {self.resource.table} AS {self.table.alias} ({', '.join(names)})"
                f" VALUES ({values}) RETURNING {self.table.select_all}"
            )
            row = dict(await self._write(conn, sql, bind.params))
            await self._hook("after_create", ctx, conn, row=row)
            await self._event(ctx, conn, "created", row)
        await self._wrote(ctx)
        return row

    async def _create_at_once(self, ctx: Context, data: dict[str, Any]) -> Row | None:
        """Insert with its reference checks and its event in one statement; None when a check failed
        (the transactional path then says which)."""
        bind = Binder()
        names = list(data)
        values = ", ".join(bind(data[n]) for n in names)
        checks = [cond for _, _, cond in self.rules.reference_checks(ctx, data, bind)]
        guard = " WHERE " + " AND ".join(checks) if checks else ""
        event, event_sql = self._event_in_statement(ctx, "created", "ins", bind)
        sql = (
            f"WITH ins AS (INSERT INTO {self.resource.table} AS {self.table.alias} ({', '.join(names)})"
            f" SELECT {values}{guard} RETURNING {self.table.select_all}), ev AS ({event_sql})"
            " SELECT * FROM ins"
        )
        async with self.db.connection() as conn:
            record = await self._write_if(conn, sql, bind.params)
        if record is None:
            return None
        row = dict(record)
        event["resource_id"], event["data"] = str(row["id"]), row
        await self._announce(ctx, event, "created", row)
        await self._wrote(ctx)
        return row

    async def update(
        self,
        ctx: Context,
        key: Any,
        body: Any,
        *,
        if_match: str | None = None,
        parent_id: uuid.UUID | None = None,
    ) -> Row:
        """Apply a partial update; `version` goes up by one when anything changed."""
        if self.resource.policy.write_permission:
            ctx.actor.require(self.resource.policy.write_permission)
        data = validate_update(self.resource, body)
        if (
            data
            and parent_id is None
            and if_match is None
            and self._one_statement_update
            and not self.db.in_transaction()
        ):
            row = await self._update_at_once(ctx, key, data)
            if row is not None:
                return row
        async with self.db.transaction() as conn:
            current = await self._lock_for_write(ctx, conn, key, parent_id, if_match, delete=False)
            fields = self.resource.all_fields
            changes = {n: v for n, v in data.items() if fields[n].type.to_json(v) != current[n]}
            await self._hook("before_update", ctx, conn, current=current, changes=changes)
            if not changes:
                return current
            await self.check_references(ctx, conn, changes)
            bind = Binder()
            sets = [f"{n} = {bind(v)}" for n, v in changes.items()]
            sql = (
                f"UPDATE {self.resource.table} AS {self.table.alias} SET {', '.join(sets)},"
                f" version = {self.table.alias}.version + 1, updated_at = now()"
                f" WHERE {self.table.alias}.id = {bind(current_id(current))}"
                f" RETURNING {self.table.select_all}"
            )
            row = dict(await self._write(conn, sql, bind.params))
            await self._hook("after_update", ctx, conn, row=row, before=current)
            diff = {n: {"from": current[n], "to": row[n]} for n in changes}
            await self._event(ctx, conn, "updated", row, diff)
        await self._wrote(ctx)
        return row

    async def _update_at_once(self, ctx: Context, key: Any, data: dict[str, Any]) -> Row | None:
        """The common update in one statement: lock, visibility, writability, reference checks,
        "anything changed?", the UPDATE and its event. Answers 404, 403 and "nothing changed" itself;
        None when a reference check failed (the transactional path then says which, as before)."""
        bind = Binder()
        a, n_cols = self.table.alias, len(self.table.columns)
        where = self.table.key_where(key, None, bind)
        visible = self.rules.visible_sql(ctx.actor, a, bind) or "TRUE"
        writable = self.rules.writable_sql(ctx.actor, a, bind, delete=False) or "TRUE"
        refs = " AND ".join(cond for _, _, cond in self.rules.reference_checks(ctx, data, bind)) or "TRUE"
        params = {n: bind(v) for n, v in data.items()}
        sets = ", ".join(f"{n} = {p}" for n, p in params.items())
        differs = " OR ".join(f"{a}.{n} IS DISTINCT FROM {p}" for n, p in params.items())
        diff = ", ".join(
            f"('{n}', CASE WHEN cur.{n} IS DISTINCT FROM upd.{n} THEN"
            f" jsonb_build_object('from', to_jsonb(cur.{n}), 'to', to_jsonb(upd.{n})) END)"
            for n in data
        )
        changes_sql = (
            f"(SELECT coalesce(jsonb_object_agg(k, v), '{{}}'::jsonb) FROM (VALUES {diff}) AS d(k, v)"
            " WHERE v IS NOT NULL)"
        )
        event, event_sql = self._event_in_statement(
            ctx, "updated", "upd", bind, changes_sql=changes_sql, joined="cur"
        )
        columns = (
            ", ".join(f"upd.{n}" for n in self.table.columns)
            + ", "
            + ", ".join(f"cur.{n}" for n in self.table.columns)
        )
        sql = (
            f"WITH cur AS (SELECT {self.table.select_all}, {a}.id AS _id, ({visible}) AS _visible,"
            f" ({writable}) AS _writable, ({refs}) AS _refs"
            f" FROM {self.table.from_}{where_sql(where)} FOR UPDATE OF {a}),"
            f" upd AS (UPDATE {self.resource.table} AS {a} SET {sets}, version = {a}.version + 1,"
            f" updated_at = now() FROM cur WHERE {a}.id = cur._id AND cur._visible AND cur._writable"
            f" AND cur._refs AND ({differs}) RETURNING {self.table.select_all}),"
            f" ev AS ({event_sql})"
            f" SELECT cur._visible, cur._writable, cur._refs, upd.id IS NOT NULL, {columns}"
            " FROM cur LEFT JOIN upd ON TRUE"
        )
        async with self.db.connection() as conn:
            record = await self._write_if(conn, sql, bind.params)
        if record is None or not record[0]:
            raise self.reader.not_found()
        if not record[1]:
            raise Forbidden(f"You may not change this {self.resource.name} item.")
        if not record[2]:
            return None
        old = dict(zip(self.table.columns, record[4 + n_cols :], strict=True))
        if not record[3]:
            return old  # nothing changed: no new version, no event
        row = dict(zip(self.table.columns, record[4 : 4 + n_cols], strict=True))
        event["resource_id"], event["data"] = str(row["id"]), row
        event["changes"] = {n: {"from": old[n], "to": row[n]} for n in data if old[n] != row[n]}
        await self._announce(ctx, event, "updated", row)
        await self._wrote(ctx)
        return row

    async def delete(
        self, ctx: Context, key: Any, *, if_match: str | None = None, parent_id: uuid.UUID | None = None
    ) -> Row:
        """Delete a row the caller may delete; returns the row as it was."""
        if self.resource.policy.write_permission:
            ctx.actor.require(self.resource.policy.write_permission)
        async with self.db.transaction() as conn:
            current = await self._lock_for_write(ctx, conn, key, parent_id, if_match, delete=True)
            await self._hook("before_delete", ctx, conn, row=current)
            try:
                await self._cascade(ctx, conn, [current_id(current)])
                await conn.execute(self._delete_sql("id = $1"), current_id(current))
            except asyncpg.ForeignKeyViolationError as exc:  # a RESTRICT reference still points here
                raise Conflict(f"This {self.resource.name} item is still referenced by other items.") from exc
            await self._hook("after_delete", ctx, conn, row=current)
            await self._event(ctx, conn, "deleted", current)
        await self._wrote(ctx)
        return current

    async def _wrote(self, ctx: Context) -> None:
        """With replicas, the caller's next reads must see this write: leave their mark once it commits."""
        reads = self.replicas
        if reads is not None:
            subject = ctx.actor.user_id
            await self.db.after_commit(lambda: reads.wrote(subject))

    async def _lock_for_write(
        self,
        ctx: Context,
        conn: asyncpg.Connection,
        key: Any,
        parent_id: uuid.UUID | None,
        if_match: str | None,
        *,
        delete: bool,
    ) -> Row:
        # One round trip answers "does it exist", "may the caller see it" and "may the caller change it".
        bind = Binder()
        where = self.table.key_where(key, parent_id, bind)
        visible = self.rules.visible_sql(ctx.actor, self.table.alias, bind) or "TRUE"
        writable = self.rules.writable_sql(ctx.actor, self.table.alias, bind, delete=delete) or "TRUE"
        sql = (
            f"SELECT {self.table.select_all}, ({visible}) AS _visible, ({writable}) AS _writable"
            f" FROM {self.table.from_}{where_sql(where)} FOR UPDATE OF {self.table.alias}"
        )
        record = await conn.fetchrow(sql, *bind.params)
        if record is None or not record["_visible"]:
            if parent_id is not None:
                await self.reader.require_parent(ctx, parent_id, conn=conn)
            raise self.reader.not_found()
        if not record["_writable"]:
            raise Forbidden(f"You may not change this {self.resource.name} item.")
        row = dict(record)
        del row["_visible"], row["_writable"]
        if if_match_fails(if_match, row["version"]):
            raise PreconditionFailed(f"The {self.resource.name} item has changed since you fetched it.")
        return row

    async def _cascade(self, ctx: Context, conn: asyncpg.Connection, ids: builtins.list[uuid.UUID]) -> None:
        """Delete the rows that reference these ones with ON DELETE CASCADE, deepest first, each with its
        `deleted` event: the database would remove them anyway, but silently, and every delete has an event.
        """
        for other in self.managers.values():
            for name, field in other.resource.all_fields.items():
                ref = field.type
                if (
                    not isinstance(ref, Reference)
                    or ref.target != self.resource.name
                    or ref.on_delete != "CASCADE"
                ):
                    continue
                table = other.resource.table
                child_ids = [
                    r["id"]
                    for r in await conn.fetch(f"SELECT id FROM {table} WHERE {name} = ANY($1::uuid[])", ids)
                ]
                if not child_ids:
                    continue
                await other.writer._cascade(ctx, conn, child_ids)
                rows = await conn.fetch(
                    other.writer._delete_sql("id = ANY($1::uuid[])", returning=True), child_ids
                )
                for row in rows:
                    await other.writer._event(ctx, conn, "deleted", dict(row))

    def _delete_sql(self, where: str, *, returning: bool = False) -> str:
        """Delete the rows matching `where` (on the table's own column names) and keep each, as it was, in
        the record of deleted rows, in one statement; with `returning`, the rows as clients see them."""
        a, names = self.table.alias, ", ".join(self.table.columns)
        return (
            f"WITH gone AS (DELETE FROM {self.resource.table} WHERE {where} RETURNING *),"
            f" kept AS (INSERT INTO {self.resource.deleted_table} ({names}) SELECT {names} FROM gone)"
            + (
                f" SELECT {self.table.select_all} FROM gone {a}"
                if returning
                else " SELECT count(*) FROM gone"
            )
        )

    async def check_references(self, ctx: Context, conn: asyncpg.Connection, data: Mapping[str, Any]) -> None:
        """422 on each reference that names a row the caller may not see (or use) as if it did not exist."""
        bind = Binder()
        checks = self.rules.reference_checks(ctx, data, bind)
        if not checks:
            return
        # One round trip for all of them.
        record = await conn.fetchrow("SELECT " + ", ".join(cond for _, _, cond in checks), *bind.params)
        assert record is not None
        errors = [
            FieldError(name, "not_found", f"No such {target} item, or not yours.")
            for (name, target, _), ok in zip(checks, record, strict=True)
            if not ok
        ]
        if errors:
            raise ValidationFailed(errors)

    async def _write(self, conn: asyncpg.Connection, sql: str, params: Sequence[Any]) -> asyncpg.Record:
        record = await self._write_if(conn, sql, params)
        assert record is not None  # INSERT/UPDATE ... RETURNING of a locked row
        return record

    async def _write_if(
        self, conn: asyncpg.Connection, sql: str, params: Sequence[Any]
    ) -> asyncpg.Record | None:
        """Run a writing statement; constraint errors become the problems clients see."""
        # No savepoint of its own (two round trips per write): a constraint error fails the whole
        # change, and when this manager runs inside another's transaction, its own block is the savepoint.
        try:
            record: asyncpg.Record | None = await conn.fetchrow(sql, *params)
            return record

        except asyncpg.UniqueViolationError as exc:
            raise Conflict(_unique_message(self.resource.name, exc)) from exc
        except asyncpg.ForeignKeyViolationError as exc:
            raise ValidationFailed(
                [FieldError(_fk_field(exc), "not_found", "The referenced item is gone.")]
            ) from exc
        except (asyncpg.CheckViolationError, asyncpg.NotNullViolationError) as exc:
            raise ValidationFailed(
                [
                    FieldError(
                        getattr(exc, "column_name", None) or WHOLE_BODY,
                        "invalid",
                        "The value breaks a constraint.",
                    )
                ]
            ) from exc

    async def _event(
        self,
        ctx: Context,
        conn: asyncpg.Connection,
        action: str,
        row: Row,
        changes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write the change's event row in this transaction; the bus hears of it after the commit."""
        event = await write_event(
            conn,
            resource=self.resource.name,
            action=action,
            resource_id=str(row["id"]),
            actor_id=ctx.actor.user_id,
            data=row,
            changes=changes,
            request_id=ctx.request_id,
            impersonator_id=ctx.actor.impersonator_id,
        )
        await self._announce(ctx, event, action, row)
        return event

    def _event_in_statement(
        self,
        ctx: Context,
        action: str,
        source: str,
        bind: Binder,
        *,
        changes_sql: str = "'{}'::jsonb",
        joined: str | None = None,
    ) -> tuple[dict[str, Any], str]:
        """The event (its data filled in once the row is back) and the INSERT of it from CTE `source`."""
        event, event_id, occurred_at = new_event(
            resource=self.resource.name,
            action=action,
            resource_id="",
            actor_id=ctx.actor.user_id,
            data={},
            request_id=ctx.request_id,
            impersonator_id=ctx.actor.impersonator_id,
        )
        sql = event_insert_from(
            source,
            bind,
            event_id=event_id,
            event_type=event["type"],
            resource=self.resource.name,
            actor_id=ctx.actor.user_id,
            occurred_at=occurred_at,
            request_id=ctx.request_id,
            impersonator_id=ctx.actor.impersonator_id,
            changes_sql=changes_sql,
            joined=joined,
        )
        return event, sql

    async def _announce(self, ctx: Context, event: dict[str, Any], action: str, row: Row) -> None:
        """After the commit: the row cache, then the bus (subscribers never hear of a rolled-back change)."""

        async def notify() -> None:
            version = None if action == "deleted" else row["version"]
            if self.announcer is not None:  # every other worker and instance, in the next batch
                self.announcer.announce(self.resource.table, current_id(row), version)
            if self.feed is not None:
                # This worker knows at once (read-your-writes; with a shared cache, every worker does once
                # it settled).
                self.feed.changed(self.resource.name, current_id(row), version, local=True)
                await self.feed.cache.settle()
            await self.bus.emit(event, request_id=ctx.request_id)

        await self.db.after_commit(notify)


def current_id(row: Row) -> uuid.UUID:
    return uuid.UUID(str(row["id"]))


def _new_key() -> uuid.UUID:
    from rampart.lib.ids import new_id

    return new_id()


def _unique_message(resource: str, exc: asyncpg.UniqueViolationError) -> str:
    return f"A {resource} item with the same unique values already exists."


def _fk_field(exc: asyncpg.ForeignKeyViolationError) -> str:
    detail = getattr(exc, "detail", "") or ""
    # PostgreSQL says 'Key (project_id)=(...) is not present in table ...': the column name is ours.
    if detail.startswith("Key (") and ")=" in detail:
        return detail[5 : detail.index(")=")]
    return WHOLE_BODY
