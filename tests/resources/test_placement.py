"""Placement in the declaration (where a resource's rows live on a Citus cluster) and the alias predicates
receive: what Citus could not keep is refused when the resource is declared, and the alias writes the
shard key's condition only where it pins something (decisions 0019, 0024)."""

from __future__ import annotations

from typing import Any

import pytest

from rampart import Alias, Field, Parent, Placement, Reference, Resource, Text
from rampart.resources.selects import TableSQL
from rampart.resources.spec import Binder, Registry, check_references


def resource(**options: Any) -> Resource:
    fields = {
        "project_id": Field(Reference("projects"), required=True, immutable=True),
        "title": Field(Text(), required=True),
        **options.pop("fields", {}),
    }
    return Resource(name="tasks", fields=fields, **options)


ROOT = Resource(name="projects", fields={"name": Field(Text())}, placement=Placement.distributed())


def test_the_demo_places_a_project_with_its_members_and_tasks() -> None:
    from rampart.apps.tasks.resources import members, projects, tasks

    assert projects.placement == Placement.distributed()
    assert members.placement == tasks.placement == Placement.distributed(by="project_id")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"placement": Placement.distributed(by="title")}, "must name a Reference field"),
        ({"placement": Placement.distributed(by="nowhere")}, "must name a Reference field"),
        (
            {
                "placement": Placement.distributed(by="other_id"),
                "fields": {"other_id": Field(Reference("projects"), nullable=True, immutable=True)},
            },
            "not nullable and never changes",
        ),
        (
            {
                "placement": Placement.distributed(by="other_id"),
                "fields": {"other_id": Field(Reference("projects"), required=True)},
            },
            "not nullable and never changes",
        ),
        (
            {
                "placement": Placement.distributed(by="project_id"),
                "fields": {"code": Field(Text(), unique=True)},
            },
            r"tasks\.code: a distributed resource cannot keep a field unique on its own",
        ),
        (
            {
                "placement": Placement.distributed(by="project_id"),
                "fields": {"code": Field(Text())},
                "unique_together": [("owner_id", "code")],
            },
            "must include 'project_id'",
        ),
        ({"placement": Placement("reference", "project_id")}, "only a distributed"),
        ({"placement": Placement("sharded")}, "unknown placement"),
    ],
)
def test_a_placement_citus_could_not_keep_is_refused_when_declared(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        resource(**options)


def test_a_distributed_resource_is_found_by_id_or_within_the_parent_it_is_placed_by() -> None:
    fields = {
        "project_id": Field(Reference("projects"), read_only=True),
        "user_id": Field(Reference("users", must="exist"), required=True, immutable=True),
    }
    members = Resource(
        name="members",
        fields=fields,
        owner_field=None,
        parent=Parent("projects", "project_id"),
        key="user_id",
        unique_together=[("project_id", "user_id")],
        placement=Placement.distributed(by="project_id"),
    )
    assert members.placement.by == "project_id"
    with pytest.raises(ValueError, match="found by its id, or by its key within a parent"):
        Resource(
            name="members", fields=fields, owner_field=None, key="user_id", placement=Placement.distributed()
        )


def test_a_placement_by_a_resource_that_is_not_distributed_is_refused_when_the_app_is_built() -> None:
    registry = Registry()
    registry.add(Resource(name="projects", fields={"name": Field(Text())}))  # local
    registry.add(Resource(name="users", fields={"name": Field(Text())}, owner_field=None))
    registry.add(resource(placement=Placement.distributed(by="project_id")))
    with pytest.raises(ValueError, match="names projects, which is not distributed"):
        check_references(registry)


def test_a_local_resource_may_reference_a_distributed_one_on_one_server() -> None:
    """Refused only by `rampart migrate` on a cluster (Citus keeps no such reference)."""
    registry = Registry()
    registry.add(ROOT)
    registry.add(Resource(name="users", fields={"name": Field(Text())}, owner_field=None))
    registry.add(resource())
    check_references(registry)


def test_an_alias_pins_only_on_a_cluster_and_only_what_it_knows() -> None:
    plain = Alias("t")
    assert plain == "t"
    assert f"{plain}.owner_id" == "t.owner_id"
    assert plain.same_shard("pm") == plain.pin("pm") == ""
    listed = Alias("t", "t.shard_key")  # a list on a cluster: the row's own column
    assert listed.same_shard("pm") == " AND pm.shard_key = t.shard_key"
    assert listed.pin("pm") == ""  # an uncorrelated subquery stays uncorrelated
    read = Alias("t", "$4", known=True)  # a read by id: the bound shard key
    assert read.same_shard("pm") == read.pin("pm") == " AND pm.shard_key = $4"
    inner = listed.inner("pp", colocated=True)
    assert inner.same_shard("x") == " AND x.shard_key = pp.shard_key"
    assert read.inner("pp", colocated=True).pin("x") == " AND x.shard_key = $4"
    assert read.inner("pp", colocated=False).pin("x") == ""


def test_a_tables_key_condition_leads_with_the_shard_key_when_given() -> None:
    table = TableSQL(resource(placement=Placement.distributed(by="project_id")))
    bind = Binder()
    key = bind("k")
    assert table.key_where("id-value", None, bind, key) == ["t.shard_key = $1", "t.id = $2"]
    assert table.key_where("id-value", None, Binder()) == ["t.id = $1"]
    assert table.row_alias(citus=False) == "t"
    assert table.row_alias(citus=False).shard is None
    assert table.row_alias(citus=True).shard == "t.shard_key"
    assert table.row_alias(citus=True, shard="$1").known
    local = TableSQL(resource())
    assert local.row_alias(citus=True).shard is None  # nothing to pin on a table that is not distributed


def test_returning_uses_the_immutable_formatting_on_a_cluster_only() -> None:
    table = TableSQL(resource())
    assert "to_char(t.created_at" in table.returning(citus=False)
    assert "rampart_ts(t.created_at)" in table.returning(citus=True)
    assert "to_char" not in table.returning(citus=True)
