"""The demo application: projects, their members and their tasks (API.md "Resources").

Written only against the public framework API, exactly as a user declares their own resources.
"""

from __future__ import annotations

from rampart import (
    Actor,
    Alias,
    Binder,
    Choice,
    Date,
    Field,
    Integer,
    Parent,
    Placement,
    Policy,
    Reference,
    Resource,
    Text,
)

# On a Citus cluster a project, its members and its tasks share one shard (Placement below), and the
# predicates keep their subqueries there: `pin` in a subquery that does not refer to the row, `same_shard`
# in one that does (rampart.resources.placement.Alias). On one PostgreSQL server both write nothing.


def project_visible(actor: Actor, p: Alias, bind: Binder) -> str:
    """The owner and every member see a project."""
    # Two indexed conditions (owner_id; id among the caller's memberships), so listing the projects one
    # may see reads those through the indexes (a BitmapOr) instead of testing every project: what the
    # audit log needs (decision 0016) and lists gain. One row is still checked in two lookups.
    me = bind(actor.user_id)
    return (
        f"({p}.owner_id = {me} OR {p}.id = ANY(ARRAY("
        f"SELECT pm.project_id FROM project_members pm WHERE pm.user_id = {me}{p.pin('pm')})))"
    )


def project_owned(actor: Actor, p: Alias, bind: Binder) -> str:
    """Only the owner changes or deletes a project and manages its members."""
    return f"{p}.owner_id = {bind(actor.user_id)}"


def project_editable(actor: Actor, p: Alias, bind: Binder) -> str:
    """The owner and editors may write the project's tasks."""
    me = bind(actor.user_id)
    return (
        f"({p}.owner_id = {me} OR EXISTS (SELECT 1 FROM project_members pm"
        f" WHERE pm.project_id = {p}.id{p.same_shard('pm')} AND pm.user_id = {me} AND pm.role = 'editor'))"
    )


def task_visible(actor: Actor, t: Alias, bind: Binder) -> str:
    # ANY(ARRAY(...)) lets the planner use the (project_id, ...) indexes of tasks for lists.
    me = bind(actor.user_id)
    return (
        f"{t}.project_id = ANY(ARRAY(SELECT pv.id FROM projects pv WHERE pv.owner_id = {me}{t.pin('pv')}"
        f" UNION ALL SELECT mv.project_id FROM project_members mv WHERE mv.user_id = {me}{t.pin('mv')}))"
    )


def task_writable(actor: Actor, t: Alias, bind: Binder) -> str:
    editable = project_editable(actor, t.inner("pp", colocated=True), bind)
    return (
        f"EXISTS (SELECT 1 FROM projects pp WHERE pp.id = {t}.project_id{t.same_shard('pp')} AND {editable})"
    )


projects = Resource(
    name="projects",
    description="A project groups tasks; its owner manages its members.",
    fields={
        "name": Field(
            Text(min_length=1, max_length=120),
            required=True,
            filter=("eq", "contains"),
            sort=True,
            description="What the project is called.",
        ),
        "description": Field(Text(max_length=5000), default="", description="Notes about the project."),
    },
    policy=Policy(
        visible=project_visible,
        writable=project_owned,
        create_permission="projects:create",
        depends_on=("members",),
    ),
    # On a Citus cluster: spread over the workers by id; members and tasks live with their project.
    placement=Placement.distributed(),
)

members = Resource(
    name="members",
    table="project_members",
    description="Members of a project and their role in it.",
    parent=Parent(resource="projects", field="project_id"),
    key="user_id",
    owner_field=None,
    fields={
        "project_id": Field(Reference("projects"), read_only=True, filter=("eq",)),
        "user_id": Field(
            Reference("users", must="exist"),
            required=True,
            immutable=True,
            filter=("eq", "in"),
            description="The member: a user of the service.",
        ),
        "role": Field(
            Choice(("viewer", "editor")),
            required=True,
            filter=True,
            sort=True,
            description="A viewer sees the project and its tasks; an editor also writes its tasks.",
        ),
    },
    unique_together=[("project_id", "user_id")],
    indexes=[("user_id", "project_id")],
    operations=frozenset({"list", "create", "delete"}),
    placement=Placement.distributed(by="project_id"),
)

tasks = Resource(
    name="tasks",
    description="A task of a project.",
    fields={
        "project_id": Field(
            Reference("projects", must=project_editable),
            required=True,
            immutable=True,
            filter=("eq", "in"),
            description="The project it belongs to (one the caller may edit); it cannot change.",
        ),
        "title": Field(
            Text(min_length=1, max_length=200), required=True, filter=("eq", "contains"), sort=True
        ),
        "description": Field(Text(max_length=10_000), default=""),
        "status": Field(
            Choice(("todo", "in_progress", "done")),
            default="todo",
            filter=True,
            sort=True,
            description="Where the task stands.",
        ),
        "priority": Field(
            Integer(minimum=0, maximum=5, small=True),
            default=0,
            filter=True,
            sort=True,
            description="From 0 (none) to 5 (most urgent).",
        ),
        "due_date": Field(Date(), nullable=True, filter=True, description="When it is due, if it is."),
        "assignee_id": Field(
            Reference("users", must="exist", on_delete="SET NULL"),
            nullable=True,
            filter=("eq", "in"),
            description="Who does it, or null; set to null when that user is deleted.",
        ),
    },
    policy=Policy(
        visible=task_visible,
        writable=task_writable,
        create_permission="tasks:write",
        write_permission="tasks:write",
        depends_on=("projects", "members"),
    ),
    indexes=[
        ("project_id", "status", "priority", "created_at"),
        ("owner_id", "status", "priority", "created_at"),
        # A project's tasks, newest first (how they are paged by default), read without sorting them all.
        ("project_id", "created_at"),
    ],
    placement=Placement.distributed(by="project_id"),
)


def declare() -> list[Resource]:
    """The resources of the demo app, in dependency order."""
    return [projects, members, tasks]
