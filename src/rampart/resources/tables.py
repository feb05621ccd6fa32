"""The table of a resource, and its record of deleted rows, as SQLAlchemy metadata: what migrations are
generated from."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.sql.schema import SchemaItem

from rampart.lib.rowcache import FIRST_VERSION
from rampart.resources.fields import Choice, Integer, Reference, Text, TextList, Timestamp
from rampart.resources.spec import Resource

_SERVER_DEFAULTS = {
    "created_at": sa.text("now()"),
    "updated_at": sa.text("now()"),
    "version": sa.text(str(FIRST_VERSION)),  # the row cache relies on it (rampart.lib.rowcache)
}


def define_table(resource: Resource, metadata: sa.MetaData, *, tables: dict[str, str]) -> sa.Table:
    """`tables` maps resource names to table names, to resolve references."""
    columns: list[SchemaItem] = []
    # A reference gets an index of its own (joins, ON DELETE) unless a declared index already leads with it:
    # a second one would cost every insert and non-HOT update without serving any query.
    leading = {cols[0] for cols in (*resource.indexes, *resource.unique_together) if cols}
    for name, field in resource.all_fields.items():
        ftype = field.type
        args: list[SchemaItem] = []
        if isinstance(ftype, Reference):
            args.append(sa.ForeignKey(f"{tables[ftype.target]}.id", ondelete=ftype.on_delete))
        column = sa.Column(
            name,
            ftype.sa_type(),
            *args,
            primary_key=name == "id",
            nullable=field.nullable and name != "id",
            server_default=_SERVER_DEFAULTS.get(name),
        )
        columns.append(column)
        if isinstance(ftype, Choice):
            values = ", ".join("'" + v.replace("'", "''") + "'" for v in ftype.values)
            columns.append(sa.CheckConstraint(f"{name} IN ({values})", name=f"{resource.table}_{name}_check"))
        elif isinstance(ftype, Integer) and name != "version":
            columns.append(
                sa.CheckConstraint(
                    f"{name} BETWEEN {ftype.minimum} AND {ftype.maximum}",
                    name=f"{resource.table}_{name}_range",
                )
            )
        elif isinstance(ftype, Text):
            columns.append(
                sa.CheckConstraint(
                    f"char_length({name}) <= {ftype.max_length}", name=f"{resource.table}_{name}_length"
                )
            )
        elif isinstance(ftype, TextList):
            columns.append(
                sa.CheckConstraint(
                    f"cardinality({name}) <= {ftype.max_items}", name=f"{resource.table}_{name}_items"
                )
            )
        if field.unique:
            columns.append(sa.Index(f"{resource.table}_{name}_key", name, unique=True))
        elif field.index or (isinstance(ftype, Reference) and name != "id" and name not in leading):
            columns.append(sa.Index(f"{resource.table}_{name}_idx", name))
    for cols in resource.indexes:
        columns.append(sa.Index(f"{resource.table}_{'_'.join(cols)}_idx", *cols))
    for cols in resource.unique_together:
        columns.append(sa.UniqueConstraint(*cols, name=f"{resource.table}_{'_'.join(cols)}_key"))
    return sa.Table(resource.table, metadata, *columns)


def define_deleted_table(resource: Resource, metadata: sa.MetaData) -> sa.Table:
    """The record of the resource's deleted rows (`<table>_deleted`), as each was when deleted.

    The audit log decides who may see a deleted object's events by the resource's own visibility rule,
    evaluated on this row (decision 0016), so it has the table's columns and the same indexes that the
    rule's predicates use on the live table; none of its constraints (a deleted row references rows that
    may be gone too; its values came from a row that met them), and `deleted_at`, by which retention
    drops it. Write-only fields are not kept: they are never shown again, and no rule may read them.
    """
    table = resource.deleted_table
    columns: list[SchemaItem] = [
        sa.Column(name, field.type.sa_type(), primary_key=name == "id", nullable=name != "id")
        for name, field in resource.shown_fields.items()
    ]
    columns.append(
        sa.Column("deleted_at", Timestamp().sa_type(), nullable=False, server_default=sa.text("now()"))
    )
    leading = {cols[0] for cols in (*resource.indexes, *resource.unique_together) if cols}
    for name, field in resource.shown_fields.items():
        if (
            field.unique
            or field.index
            or (isinstance(field.type, Reference) and name != "id" and name not in leading)
        ):
            columns.append(sa.Index(f"{table}_{name}_idx", name))
    for cols in (*resource.indexes, *resource.unique_together):
        if set(cols) <= set(resource.shown_fields):
            columns.append(sa.Index(f"{table}_{'_'.join(cols)}_idx", *cols))
    columns.append(sa.Index(f"{table}_deleted_at_idx", "deleted_at"))
    return sa.Table(table, metadata, *columns)
