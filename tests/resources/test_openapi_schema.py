"""The OpenAPI description derived from a declaration: names, required fields, enums, nullable values,
examples that validation accepts, and list parameters whose schemas admit what the parser accepts."""

from __future__ import annotations

import re
from typing import Any

import pytest

from rampart.resources.fields import Boolean, Choice, Date, Integer, Reference, Text
from rampart.resources.openapi_parts import Named
from rampart.resources.openapi_schema import (
    article,
    create_schema,
    item_schema,
    list_parameters,
    schemas,
    words,
)
from rampart.resources.spec import Field, Resource


def gadgets(**options: Any) -> Resource:
    return Resource(
        name="gadgets",
        description="Something to test with.",
        fields={
            "label": Field(Text(min_length=1, max_length=40), required=True, filter=True, sort=True),
            "size": Field(Integer(minimum=0, maximum=9, small=True), default=3, filter=True),
            "kind": Field(Choice(("nut", "bolt")), nullable=True, filter=True, description="What it is."),
            "made_on": Field(Date(), nullable=True),
            "spare": Field(Boolean(), default=False),
            "maker_id": Field(Reference("users"), nullable=True, filter=("eq", "in")),
        },
        **options,
    )


@pytest.mark.parametrize(
    ("name", "schema_name"),
    [
        ("tasks", "Task"),
        ("categories", "Category"),
        ("boxes", "Box"),
        ("addresses", "Address"),
        ("releases", "Release"),
        ("task_comments", "TaskComment"),
        ("news", "New"),  # wrong, and fixed by declaring schema_name
        ("status", "Status"),
    ],
)
def test_schema_name_is_the_singular_in_pascal_case(name: str, schema_name: str) -> None:
    assert Resource(name=name, fields={}).schema_name == schema_name


def test_schema_name_can_be_declared_and_must_be_pascal_case() -> None:
    assert Resource(name="news", fields={}, schema_name="NewsItem").schema_name == "NewsItem"
    with pytest.raises(ValueError, match="PascalCase"):
        Resource(name="news", fields={}, schema_name="news_item")


@pytest.mark.parametrize(
    ("noun", "phrase"),
    [
        ("task", "a task"),
        ("event", "an event"),
        ("user", "a user"),
        ("update", "an update"),
        ("item", "an item"),
    ],
)
def test_article(noun: str, phrase: str) -> None:
    assert article(noun) == phrase


def test_words_and_names() -> None:
    resource = Resource(name="task_comments", fields={})
    assert words(resource) == "task comment"
    assert {n.name for n in schemas(resource).values()} == {
        "TaskComment",
        "TaskCommentCreate",
        "TaskCommentUpdate",
        "TaskCommentPage",
        "TaskCommentFields",
        "TaskCommentFieldsPage",
    }


def test_item_requires_every_field_and_choices_are_named_enums() -> None:
    resource = gadgets()
    item = item_schema(resource)
    assert set(item["required"]) == set(resource.all_fields)
    assert item["description"] == "Something to test with."
    kind = item["properties"]["kind"]  # nullable choice: the shared enum, or null
    assert kind["anyOf"][1] == {"type": "null"}
    enum = kind["anyOf"][0]
    assert isinstance(enum, Named)
    assert enum.name == "GadgetKind"
    assert enum.schema == {"type": "string", "enum": ["nut", "bolt"], "description": "What it is."}
    assert item["properties"]["made_on"]["type"] == ["string", "null"]
    assert item["properties"]["id"]["readOnly"] is True
    create = create_schema(resource)
    assert create["required"] == ["label"]
    assert create["additionalProperties"] is False


def test_examples_are_values_validation_accepts() -> None:
    resource = gadgets()
    for name, prop in item_schema(resource)["properties"].items():
        field = resource.all_fields[name]
        for example in prop.get("examples", []):
            field.type.check(example)  # raises FieldInvalid otherwise
    assert item_schema(resource)["properties"]["size"]["examples"] == [3]  # the default first


def test_list_parameters_admit_exactly_what_the_parser_takes() -> None:
    params = {p["name"]: p for p in list_parameters(gadgets())}
    assert params["size[in]"]["schema"]["items"] == {"type": "integer", "minimum": -32768, "maximum": 32767}
    label_in = params["label[in]"]["schema"]["items"]
    assert label_in["minLength"] == 1
    assert re.search(label_in["pattern"], "abc")
    for bad in ("", "a,b", "a\x00"):
        assert not re.search(label_in["pattern"], bad), bad
    assert params["kind"]["schema"].name == "GadgetKind"
    assert params["kind[is]"]["schema"].name == "NullCheck"
    sort = re.compile(params["sort"]["schema"]["pattern"])
    assert sort.search("-label,created_at")
    assert not sort.search("size")  # not sortable
    assert params["include_total"]["schema"] == {"type": "boolean", "default": False}


def test_a_schema_name_the_service_uses_is_refused_when_the_document_is_built() -> None:
    from rampart.api.openapi import build_spec
    from rampart.resources.endpoints import RouteSpec
    from rampart.resources.openapi_parts import data, response

    async def handler(call: Any) -> Any:
        raise NotImplementedError

    def route(path: str, name: str, schema: dict[str, Any]) -> RouteSpec:
        return RouteSpec(
            "GET", path, handler, openapi={"responses": {"200": response("x", data(Named(name, schema)))}}
        )

    build_spec([route("/a", "Thing", {"type": "object"})], title="t", version="1", extra_paths={})
    with pytest.raises(ValueError, match="two different OpenAPI schemas are named 'Thing'"):
        build_spec(
            [route("/a", "Thing", {"type": "object"}), route("/b", "Thing", {"type": "string"})],
            title="t",
            version="1",
            extra_paths={},
        )
    with pytest.raises(ValueError, match="service's own"):
        build_spec([route("/a", "Problem", {"type": "object"})], title="t", version="1", extra_paths={})
