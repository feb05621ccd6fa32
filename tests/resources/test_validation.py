"""Strict body validation against a resource declaration: no mass assignment, strict JSON types, every
bad field reported, defaults filled on create, nothing added on update."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from rampart.apps.tasks.resources import members, projects, tasks
from rampart.errors import ValidationFailed
from rampart.resources.fields import Reference, Text
from rampart.resources.spec import Field, Parent, Resource
from rampart.resources.validation import validate_create, validate_update

U = "0190a6d2-7c1e-7b4a-9a31-6f2f8d1c2e3b"
TASK = {"project_id": U, "title": "t"}

# A nested resource whose parent field is writable in the declaration: the URL gives it.
NOTES = Resource(
    name="notes",
    parent=Parent(resource="boards", field="board_id"),
    fields={
        "board_id": Field(Reference("boards"), required=True),
        "text": Field(Text(min_length=1, max_length=10), required=True),
        "tag": Field(Text(max_length=5), immutable=True, default=""),
    },
)


def errors_of(call: Any, *args: Any, **kwargs: Any) -> set[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as caught:
        call(*args, **kwargs)
    pairs = [(e.field, e.code) for e in caught.value.errors]
    assert len(pairs) == len(set(pairs)), "one entry per bad field"
    assert caught.value.code == "validation_failed"
    return set(pairs)


# ----- create --------------------------------------------------------------------------------------------

CREATE_OK: list[tuple[Resource, dict[str, Any], dict[str, Any]]] = [
    (
        tasks,
        TASK,
        {
            "project_id": uuid.UUID(U),
            "title": "t",
            "description": "",
            "status": "todo",
            "priority": 0,
            "due_date": None,
            "assignee_id": None,
        },
    ),
    (
        tasks,
        {
            **TASK,
            "status": "done",
            "priority": 5,
            "due_date": "2028-02-29",
            "assignee_id": U,
            "description": "d",
        },
        {
            "project_id": uuid.UUID(U),
            "title": "t",
            "description": "d",
            "status": "done",
            "priority": 5,
            "due_date": dt.date(2028, 2, 29),
            "assignee_id": uuid.UUID(U),
        },
    ),
    (tasks, {**TASK, "due_date": None, "assignee_id": None}, {"due_date": None, "assignee_id": None}),
    (projects, {"name": "p"}, {"name": "p", "description": ""}),
    (
        projects,
        {"name": "n" * 120, "description": "d" * 5000},
        {"name": "n" * 120, "description": "d" * 5000},
    ),
]


@pytest.mark.parametrize(("resource", "body", "expected"), CREATE_OK)
def test_create_checks_and_fills_defaults(
    resource: Resource, body: dict[str, Any], expected: dict[str, Any]
) -> None:
    data = validate_create(resource, body)
    assert {k: data[k] for k in expected} == expected
    assert set(data) == set(resource.writable_fields)  # every writable field has a value to insert


CREATE_BAD: list[tuple[Resource, Any, set[tuple[str, str]]]] = [
    (tasks, {}, {("project_id", "required"), ("title", "required")}),
    (tasks, {"title": "t"}, {("project_id", "required")}),
    (tasks, {**TASK, "title": ""}, {("title", "required")}),
    (tasks, {**TASK, "title": "x" * 201}, {("title", "too_long")}),
    (tasks, {**TASK, "title": 1}, {("title", "invalid_type")}),
    (tasks, {**TASK, "title": None}, {("title", "null_not_allowed")}),
    (tasks, {**TASK, "priority": "3"}, {("priority", "invalid_type")}),
    (tasks, {**TASK, "priority": True}, {("priority", "invalid_type")}),
    (tasks, {**TASK, "priority": 1.5}, {("priority", "invalid_type")}),
    (tasks, {**TASK, "priority": 6}, {("priority", "too_large")}),
    (tasks, {**TASK, "priority": -1}, {("priority", "too_small")}),
    (tasks, {**TASK, "status": "open"}, {("status", "invalid_choice")}),
    (tasks, {**TASK, "due_date": "2026-02-30"}, {("due_date", "invalid_date")}),
    (tasks, {**TASK, "assignee_id": "x"}, {("assignee_id", "invalid_id")}),
    (tasks, {**TASK, "project_id": None}, {("project_id", "null_not_allowed")}),
    (tasks, {**TASK, "nope": 1}, {("nope", "unknown_field")}),
    (tasks, {**TASK, "x" * 300: 1}, {("x" * 100, "unknown_field")}),  # field names echoed at most 100 long
    (tasks, {**TASK, "id": U}, {("id", "read_only")}),
    (tasks, {**TASK, "owner_id": U}, {("owner_id", "read_only")}),
    (tasks, {**TASK, "created_at": "x"}, {("created_at", "read_only")}),
    (tasks, {**TASK, "updated_at": "x"}, {("updated_at", "read_only")}),
    (tasks, {**TASK, "version": 1}, {("version", "read_only")}),
    (
        tasks,
        {"title": "", "priority": "3", "status": None, "id": U, "extra": []},
        {
            ("project_id", "required"),
            ("title", "required"),
            ("priority", "invalid_type"),
            ("status", "null_not_allowed"),
            ("id", "read_only"),
            ("extra", "unknown_field"),
        },
    ),
    (projects, {}, {("name", "required")}),
    (
        projects,
        {"name": "n" * 121, "description": "d" * 5001},
        {("name", "too_long"), ("description", "too_long")},
    ),
    (projects, {"name": "p", "owner_id": U}, {("owner_id", "read_only")}),
    (members, {"user_id": U, "role": "owner"}, {("role", "invalid_choice")}),
    (members, {"user_id": U, "role": "viewer", "project_id": U}, {("project_id", "read_only")}),
    # bodies that are not an object
    (tasks, [], {("", "invalid_type")}),
    (tasks, [TASK], {("", "invalid_type")}),
    (tasks, "title", {("", "invalid_type")}),
    (tasks, 3, {("", "invalid_type")}),
    (tasks, None, {("", "invalid_type")}),
    (tasks, True, {("", "invalid_type")}),
]


@pytest.mark.parametrize(("resource", "body", "expected"), CREATE_BAD)
def test_create_reports_every_bad_field(
    resource: Resource, body: Any, expected: set[tuple[str, str]]
) -> None:
    assert errors_of(validate_create, resource, body) == expected


def test_create_under_a_parent_takes_the_parent_from_the_url() -> None:
    assert validate_create(NOTES, {"text": "hi"}, parent_set=True) == {"text": "hi", "tag": ""}
    assert errors_of(validate_create, NOTES, {"text": "hi", "board_id": U}, parent_set=True) == {
        ("board_id", "read_only")
    }
    assert errors_of(validate_create, NOTES, {"text": "hi"}) == {("board_id", "required")}


def test_member_create_needs_no_project_id_in_the_body() -> None:
    assert validate_create(members, {"user_id": U, "role": "editor"}, parent_set=True) == {
        "user_id": uuid.UUID(U),
        "role": "editor",
    }


# ----- update --------------------------------------------------------------------------------------------

UPDATE_OK: list[tuple[Resource, dict[str, Any], dict[str, Any]]] = [
    (tasks, {}, {}),
    (tasks, {"title": "new"}, {"title": "new"}),
    (tasks, {"due_date": None, "assignee_id": None}, {"due_date": None, "assignee_id": None}),
    (tasks, {"due_date": "2026-01-10"}, {"due_date": dt.date(2026, 1, 10)}),
    (tasks, {"priority": 0, "status": "done"}, {"priority": 0, "status": "done"}),
    (projects, {"description": ""}, {"description": ""}),
    (NOTES, {"text": "x"}, {"text": "x"}),
]


@pytest.mark.parametrize(("resource", "body", "expected"), UPDATE_OK)
def test_update_returns_only_the_given_fields(
    resource: Resource, body: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert validate_update(resource, body) == expected


UPDATE_BAD: list[tuple[Resource, Any, set[tuple[str, str]]]] = [
    (tasks, {"title": None}, {("title", "null_not_allowed")}),
    (tasks, {"title": ""}, {("title", "required")}),
    (tasks, {"priority": "3"}, {("priority", "invalid_type")}),
    (tasks, {"project_id": U}, {("project_id", "immutable")}),
    (tasks, {"version": 2}, {("version", "read_only")}),
    (tasks, {"owner_id": U}, {("owner_id", "read_only")}),
    (tasks, {"nope": 1}, {("nope", "unknown_field")}),
    (members, {"user_id": U}, {("user_id", "immutable")}),
    (NOTES, {"tag": "t"}, {("tag", "immutable")}),
    # refusing one field does not hide the others
    (
        tasks,
        {"nope": 1, "priority": "3", "version": 5, "title": None, "status": "done"},
        {
            ("nope", "unknown_field"),
            ("priority", "invalid_type"),
            ("version", "read_only"),
            ("title", "null_not_allowed"),
        },
    ),
    (
        tasks,
        {"y" * 300: 1, "due_date": "2026-02-30"},
        {("y" * 100, "unknown_field"), ("due_date", "invalid_date")},
    ),
    (tasks, [], {("", "invalid_type")}),
    (tasks, "x", {("", "invalid_type")}),
    (tasks, None, {("", "invalid_type")}),
]


@pytest.mark.parametrize(("resource", "body", "expected"), UPDATE_BAD)
def test_update_reports_every_bad_field(
    resource: Resource, body: Any, expected: set[tuple[str, str]]
) -> None:
    assert errors_of(validate_update, resource, body) == expected
