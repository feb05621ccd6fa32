"""Writing a resource's rows: create, update and delete, each with its checks (validation, permissions,
visibility, writability, references, `If-Match`), the resource's hooks, and its event written in the same
transaction as the change. Without hooks a create or an update is one statement (decision 0011); with one,
a transaction the hook takes part in. Subscribers hear of a change only after it commits.

On a Citus cluster (`Database.citus`, decided at startup; decision 0019) every write takes the
transactional path, each statement pinned to the row's shard (its id carries the key, `rampart.lib.ids`):
the row, its event and the event's queue row are written on one worker, which commits in one phase. As
one statement, each CTE went through the coordinator, at a third to a half of the rate. The row's shard key is
written with it, RETURNING formats with IMMUTABLE functions (Citus allows no other there), and what a
foreign-key action would do on a worker unseen (ON DELETE SET NULL) the manager does itself.
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
from rampart.lib.ids import new_id, shard_key_of
from rampart.resources.caching import Announcer, CacheFeed
from rampart.resources.conditional import if_match_fails
from rampart.resources.context import Context, HookContext
from rampart.resources.fields import Reference
from rampart.resources.placement import SHARD_KEY
from rampart.resources.reads import Reads
from rampart.resources.rules import AccessRules
from rampart.resources.selects import TableSQL, where_sql
from rampart.resources.spec import Binder, Resource
from rampart.resources.validation import WHOLE_BODY, validate_create, validate_update

if TYPE_CHECKING:
    from rampart.resources.manager import ResourceManager

Row = dict[str, Any]
_SEQUENTIAL = "SET LOCAL citus.multi_shard_modify_mode TO 'sequential'"


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
        # Write-only fields (made once: a resource without them pays one falsy test per write).
        self._write_only = frozenset(resource.write_only)

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
        citus = await self.db.on_citus()
        shard = await self._new_id(data, citus)
        if self.resource.owner_field:
            data[self.resource.owner_field] = ctx.actor.user_id
        if parent_id is None and self._one_statement_create and not self.db.in_transaction() and not citus:
            row = await self._create_at_once(ctx, data)
            if row is not None:
                return self._shown_once(row, data)
        by = self.resource.placement.by
        async with self.db.transaction() as conn:
            if parent_id is not None:
                parent_shard = shard if by is not None and by == _parent_field(self.resource) else None
                await self.reader.require_parent(ctx, parent_id, manage=True, conn=conn, shard=parent_shard)
            await self._hook("before_create", ctx, conn, data=data)
            await self.check_references(
                ctx, conn, data, citus=citus, shard_keys={by: shard} if by and shard is not None else None
            )
            names = list(data)
            bind = Binder()
            values = ", ".join(bind(data[n]) for n in names)
            if citus and self.table.sharded:  # the distribution column, which clients never see
                names.append(SHARD_KEY)
                values += f", {bind(shard)}"
            sql = (
                f"INSERT INTO {self.resource.table} AS {self.table.alias} ({', '.join(names)})"
                f" VALUES ({values}) RETURNING {self.table.returning(citus)}"
            )
            row = dict(await self._write(conn, sql, bind.params))
            await self._hook("after_create", ctx, conn, row=row)
            await self._event(ctx, conn, "created", row, shard=shard)
        await self._wrote(ctx)
        return self._shown_once(row, data)

    def _shown_once(self, row: Row, data: Mapping[str, Any]) -> Row:
        """The create's answer: the row, and the write-only values it was made with (never shown again).
        A new dict: the event holds `row` itself."""
        if not self._write_only:
            return row
        fields = self.resource.all_fields
        return {**row, **{n: fields[n].type.to_json(data[n]) for n in self.resource.write_only if n in data}}

    async def _new_id(self, data: dict[str, Any], citus: bool) -> int | None:
        """Give the new row its id; returns its shard key (a distributed resource's, else None).

        A row placed by a reference lives on that row's shard, and its id carries that shard's key (the
        last 32 bits, `rampart.lib.ids`) so that a read by id finds it; on one PostgreSQL server too, so
        a database moved onto Citus later has few rows whose id does not say where they live."""
        if data.get("id"):
            return shard_key_of(data["id"]) if self.table.sharded else None
        by = self.resource.placement.by if self.table.sharded else None
        if not self.table.sharded:
            data["id"] = new_id()
            return None
        if by is None:
            data["id"] = made = new_id()
            return shard_key_of(made)
        target = data.get(by)
        if not isinstance(target, uuid.UUID):
            data["id"] = made = new_id()  # refused later (the reference is required)
            return shard_key_of(made)
        shard = await self.db.shard_key(target) if citus else shard_key_of(target)
        data["id"] = new_id(shard_key=shard)
        return shard

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
        self._require_write_permission(ctx)
        data = validate_update(self.resource, body)
        citus = await self.db.on_citus()
        if (
            data
            and parent_id is None
            and if_match is None
            and self._one_statement_update
            and not self.db.in_transaction()
            and not citus
            and (not self._write_only or self._write_only.isdisjoint(data))
        ):
            row = await self._update_at_once(ctx, key, data)
            if row is not None:
                return row
        async with self.db.transaction() as conn:
            current, shard = await self._lock_for_write(
                ctx, conn, key, parent_id, if_match, delete=False, stored=bool(self._write_only)
            )
            stored = {n: current.pop(f"_stored_{n}") for n in self.resource.write_only}
            fields = self.resource.all_fields
            changes = {
                n: v
                for n, v in data.items()
                if (v != stored[n] if n in stored else fields[n].type.to_json(v) != current[n])
            }
            await self._hook("before_update", ctx, conn, current=current, changes=changes)
            if not changes:
                return current
            await self.check_references(ctx, conn, changes, citus=citus)
            bind = Binder()
            sets = [f"{n} = {bind(v)}" for n, v in changes.items()]
            a = self.table.alias
            pin = f"{a}.{SHARD_KEY} = {bind(shard)} AND " if shard is not None else ""
            sql = (
                f"UPDATE {self.resource.table} AS {a} SET {', '.join(sets)},"
                f" version = {a}.version + 1, updated_at = now()"
                f" WHERE {pin}{a}.id = {bind(current_id(current))}"
                f" RETURNING {self.table.returning(citus)}"
            )
            row = dict(await self._write(conn, sql, bind.params))
            await self._hook("after_update", ctx, conn, row=row, before=current)
            # A write-only field's change is told, never its value.
            diff = {
                n: {"changed": True} if n in self._write_only else {"from": current[n], "to": row[n]}
                for n in changes
            }
            await self._event(ctx, conn, "updated", row, diff, shard=shard)
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
        self._require_write_permission(ctx)
        citus = await self.db.on_citus()
        async with self.db.transaction() as conn:
            if citus and self._referenced():
                # The rows that reference this one are changed over every shard; then this row, in a
                # reference table perhaps: Citus allows that in one transaction only one worker connection
                # at a time ("cannot execute DML on table users because there was a parallel DML access").
                await conn.execute(_SEQUENTIAL)
            current, shard = await self._lock_for_write(ctx, conn, key, parent_id, if_match, delete=True)
            await self._hook("before_delete", ctx, conn, row=current)
            try:
                await self._cascade(ctx, conn, [current_id(current)], citus=citus)
                await self._delete(conn, [current_id(current)], citus=citus, shard=shard)
            except asyncpg.ForeignKeyViolationError as exc:  # a RESTRICT reference still points here
                raise Conflict(f"This {self.resource.name} item is still referenced by other items.") from exc
            await self._hook("after_delete", ctx, conn, row=current)
            await self._event(ctx, conn, "deleted", current, shard=shard)
        await self._wrote(ctx)
        return current

    async def lock(
        self, ctx: Context, conn: asyncpg.Connection, key: Any, *, parent_id: uuid.UUID | None = None
    ) -> Row:
        """The row, locked in the transaction of `conn`, once the caller may see (404) and change (403) it:
        what a changing action starts from (`rampart.resources.actions`)."""
        self._require_write_permission(ctx)
        row, _ = await self._lock_for_write(ctx, conn, key, parent_id, None, delete=False)
        return row

    def _require_write_permission(self, ctx: Context) -> None:
        """403 unless the caller holds the policy's `write_permission` (when it names one)."""
        if self.resource.policy.write_permission:
            ctx.actor.require(self.resource.policy.write_permission)

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
        stored: bool = False,
    ) -> tuple[Row, int | None]:
        """The row, locked, once the caller may see and change it; and on a Citus cluster its shard key
        (pinned in every statement of the write: Citus locks rows only in a statement on one shard).
        `stored`: with the write-only fields' values too, as `_stored_<name>`."""
        # One round trip answers "does it exist", "may the caller see it" and "may the caller change it".
        bind = Binder()
        citus = self.db.citus
        shard = await self.reader.shard_key(key, parent_id) if citus else None
        pin = bind(shard) if shard is not None else None
        where = self.table.key_where(key, parent_id, bind, pin)
        alias = self.table.row_alias(citus, pin)
        visible = self.rules.visible_sql(ctx.actor, alias, bind) or "TRUE"
        writable = self.rules.writable_sql(ctx.actor, alias, bind, delete=delete) or "TRUE"
        extra = f", {self.table.stored_write_only}" if stored else ""
        sql = (
            f"SELECT {self.table.select_all}{extra}, ({visible}) AS _visible, ({writable}) AS _writable"
            f" FROM {self.table.from_}{where_sql(where)} FOR UPDATE OF {self.table.alias}"
        )
        record = await conn.fetchrow(sql, *bind.params)
        if record is None or not record["_visible"]:
            if parent_id is not None:
                parent_shard = shard if self.resource.placement.by == _parent_field(self.resource) else None
                await self.reader.require_parent(ctx, parent_id, conn=conn, shard=parent_shard)
            raise self.reader.not_found()
        if not record["_writable"]:
            raise Forbidden(f"You may not change this {self.resource.name} item.")
        row = dict(record)
        del row["_visible"], row["_writable"]
        if if_match_fails(if_match, row["version"]):
            raise PreconditionFailed(f"The {self.resource.name} item has changed since you fetched it.")
        return row, shard

    async def _cascade(
        self, ctx: Context, conn: asyncpg.Connection, ids: builtins.list[uuid.UUID], *, citus: bool
    ) -> None:
        """Delete the rows that reference these ones with ON DELETE CASCADE, deepest first, each with its
        `deleted` event: the database would remove them anyway, but silently, and every delete has an event.
        On a Citus cluster, also clear the references with ON DELETE SET NULL: the database would do it on
        the workers, where no trigger announces it to the row cache (decision 0019)."""
        for other in self.managers.values():
            for name, field in other.resource.all_fields.items():
                ref = field.type
                if not isinstance(ref, Reference) or ref.target != self.resource.name:
                    continue
                table = other.resource.table
                if ref.on_delete == "SET NULL" and citus:
                    cleared = await conn.fetch(
                        f"UPDATE {table} SET {name} = NULL WHERE {name} = ANY($1::uuid[]) RETURNING id", ids
                    )
                    await other.writer._forget([r["id"] for r in cleared])
                    continue
                if ref.on_delete != "CASCADE":
                    continue
                child_ids = [
                    r["id"]
                    for r in await conn.fetch(f"SELECT id FROM {table} WHERE {name} = ANY($1::uuid[])", ids)
                ]
                if not child_ids:
                    continue
                await other.writer._cascade(ctx, conn, child_ids, citus=citus)
                for row in await other.writer._delete(conn, child_ids, citus=citus, returning=True):
                    shard = row.pop("_shard_key", None)
                    await other.writer._event(ctx, conn, "deleted", row, shard=shard)

    def _referenced(self) -> bool:
        """Another resource references this one (a delete changes its rows too)."""
        return any(
            isinstance(field.type, Reference) and field.type.target == self.resource.name
            for other in self.managers.values()
            for field in other.resource.all_fields.values()
        )

    async def _forget(self, ids: builtins.list[uuid.UUID]) -> None:
        """Rows changed without a new version (a reference cleared): every cache drops them after the commit,
        as the change trigger does on one PostgreSQL server for a foreign-key action."""
        if not ids:
            return

        async def notify() -> None:
            for key in ids:
                if self.announcer is not None:
                    self.announcer.announce(self.resource.table, key, None)
                if self.feed is not None:
                    self.feed.changed(self.resource.name, key, None, local=True)

        await self.db.after_commit(notify)

    async def _delete(
        self,
        conn: asyncpg.Connection,
        ids: builtins.list[uuid.UUID],
        *,
        citus: bool,
        shard: int | None = None,
        returning: bool = False,
    ) -> builtins.list[Row]:
        """Delete these rows and keep each, as it was, in the record of deleted rows; with `returning`, the
        rows as clients see them (on a Citus cluster with their shard key, `_shard_key`).

        One statement on one PostgreSQL server. On a Citus cluster two (the record, then the delete),
        pinned to `shard` when given: as one, the deleted rows went through the coordinator."""
        a, names = self.table.alias, ", ".join(self.table.columns)
        table, kept = self.resource.table, self.resource.deleted_table
        if not citus:
            one = len(ids) == 1 and not returning  # a delete by id, as the plan has always been
            sql = (
                f"WITH gone AS (DELETE FROM {table} WHERE {'id = $1' if one else 'id = ANY($1::uuid[])'}"
                " RETURNING *),"
                f" kept AS (INSERT INTO {kept} ({names}) SELECT {names} FROM gone)"
                + (
                    f" SELECT {self.table.select_all} FROM gone {a}"
                    if returning
                    else " SELECT count(*) FROM gone"
                )
            )
            rows = await conn.fetch(sql, ids[0] if one else ids)
            return [dict(r) for r in rows] if returning else []
        args: builtins.list[Any] = [ids]
        where = f"{a}.id = ANY($1::uuid[])"
        if self.table.sharded:
            names += f", {SHARD_KEY}"
            if shard is not None:
                where = f"{a}.{SHARD_KEY} = $2 AND {where}"
                args.append(shard)
        await conn.execute(
            f"INSERT INTO {kept} ({names}) SELECT {names} FROM {table} {a} WHERE {where}", *args
        )
        extra = f", {a}.{SHARD_KEY} AS _shard_key" if self.table.sharded else ""
        listed = f" RETURNING {self.table.returning_citus}{extra}" if returning else ""
        rows = await conn.fetch(f"DELETE FROM {table} AS {a} WHERE {where}{listed}", *args)
        return [dict(r) for r in rows]

    async def check_references(
        self,
        ctx: Context,
        conn: asyncpg.Connection,
        data: Mapping[str, Any],
        *,
        citus: bool | None = None,
        shard_keys: Mapping[str, int] | None = None,
    ) -> None:
        """422 on each reference that names a row the caller may not see (or use) as if it did not exist.

        On a Citus cluster each check names the referenced row's shard (`shard_keys` by field, when the
        caller knows them: a row made before the move onto Citus may not carry its own)."""
        bind = Binder()
        citus = self.db.citus if citus is None else citus
        if citus and not shard_keys:
            shard_keys = await self._reference_shards(data)
        checks = self.rules.reference_checks(ctx, data, bind, citus=citus, shard_keys=shard_keys)
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

    async def _reference_shards(self, data: Mapping[str, Any]) -> dict[str, int]:
        """The shard keys of the distributed rows `data` references."""
        found = {}
        for name, value in data.items():
            field_type = self.resource.all_fields[name].type
            if (
                isinstance(field_type, Reference)
                and isinstance(value, uuid.UUID)
                and self.managers[field_type.target].table.sharded
            ):
                found[name] = await self.db.shard_key(value)
        return found

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
            raise Conflict(
                f"A {self.resource.name} item with the same unique values already exists."
            ) from exc
        except asyncpg.ForeignKeyViolationError as exc:
            raise ValidationFailed(
                [FieldError(_fk_field(exc), "not_found", "The referenced item is gone.")]
            ) from exc
        except (asyncpg.CheckViolationError, asyncpg.NotNullViolationError) as exc:
            column = getattr(exc, "column_name", None) or WHOLE_BODY
            raise ValidationFailed([FieldError(column, "invalid", "The value breaks a constraint.")]) from exc

    async def _event(
        self,
        ctx: Context,
        conn: asyncpg.Connection,
        action: str,
        row: Row,
        changes: dict[str, Any] | None = None,
        *,
        shard: int | None = None,
    ) -> dict[str, Any]:
        """Write the change's event row in this transaction; the bus hears of it after the commit. On a
        Citus cluster it goes to the row's shard (`shard`; the id's when None), with its queue row."""
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
            citus=self.db.citus,
            shard_key=shard,
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
        return event, event_insert_from(
            source, bind, event, event_id, occurred_at, changes_sql=changes_sql, joined=joined
        )

    async def _announce(self, ctx: Context, event: dict[str, Any], action: str, row: Row) -> None:
        """After the commit: the row cache, then the bus (subscribers never hear of a rolled-back change)."""

        async def notify() -> None:
            version = None if action == "deleted" else row["version"]
            if self.announcer is not None:  # every other worker and instance, in the next batch
                self.announcer.announce(self.resource.table, current_id(row), version)
            if self.feed is not None:
                # This worker knows at once (read-your-writes); with a shared cache, all do once settled.
                self.feed.changed(self.resource.name, current_id(row), version, local=True)
                await self.feed.cache.settle()
            await self.bus.emit(event, request_id=ctx.request_id)

        await self.db.after_commit(notify)


def _parent_field(resource: Resource) -> str | None:
    return resource.parent.field if resource.parent is not None else None


def current_id(row: Row) -> uuid.UUID:
    return uuid.UUID(str(row["id"]))


def _fk_field(exc: asyncpg.ForeignKeyViolationError) -> str:
    detail = getattr(exc, "detail", "") or ""
    # PostgreSQL says 'Key (project_id)=(...) is not present in table ...': the column name is ours.
    if detail.startswith("Key (") and ")=" in detail:
        return detail[5 : detail.index(")=")]
    return WHOLE_BODY
