"""Declared fields as HTML form controls, and form posts back as the API's JSON bodies.

The conversion is deliberately thin: a value that does not parse (`"abc"` for an integer) is sent as the
text it is, so the manager's own validation answers, and the console shows the API's own field errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import QueryParams

from rampart.resources.fields import (
    Boolean,
    Choice,
    Date,
    FieldType,
    Integer,
    Reference,
    Text,
    TextList,
    Timestamp,
)
from rampart.resources.spec import Field, Resource

_INTEGER = re.compile(r"-?[0-9]{1,12}")
_OMIT: Any = object()
# The fields a row is named by in pickers and titles, first found first.
LABEL_FIELDS = ("email", "name", "title", "label", "slug")


@dataclass(slots=True)
class Control:
    """One form control: what the template needs to draw it."""

    name: str
    label: str
    kind: str  # text, textarea, number, checkbox, select, date, password
    required: bool
    value: Any = ""
    options: list[tuple[str, str]] = field(default_factory=list)  # (value, text)
    minimum: int | None = None
    maximum: int | None = None
    max_length: int | None = None
    hint: str = ""
    error: str = ""
    picker: str = ""  # a Reference: the resource whose rows the JS search may load


def label_field(resource: Resource) -> str | None:
    """The field that names a row of `resource` for people (its name, title, email...)."""
    shown = resource.shown_fields
    for name in LABEL_FIELDS:
        if name in shown and isinstance(shown[name].type, Text):
            return name
    return next(
        (n for n, f in resource.fields.items() if isinstance(f.type, Text) and not f.write_only), None
    )


def humanize(name: str) -> str:
    return name.replace("_id", "").replace("_", " ").capitalize()


def control(name: str, spec: Field, value: Any) -> Control:
    """The control of one field, holding `value` (a JSON value, or the text the user typed)."""
    kind_of: FieldType = spec.type
    ctl = Control(name=name, label=humanize(name), kind="text", required=spec.required, value=value)
    if spec.description:
        ctl.hint = spec.description
    if isinstance(kind_of, Boolean):
        ctl.kind, ctl.value = "checkbox", value is True or value == "true"
    elif isinstance(kind_of, Integer):
        ctl.kind, ctl.minimum, ctl.maximum = "number", kind_of.minimum, kind_of.maximum
        ctl.hint = ctl.hint or f"A whole number from {kind_of.minimum} to {kind_of.maximum}."
    elif isinstance(kind_of, Choice):
        ctl.kind = "select"
        ctl.options = [(v, v.replace("_", " ")) for v in kind_of.values]
        if spec.nullable or not (spec.required or spec.default is not None):
            ctl.options.insert(0, ("", "(none)"))
    elif isinstance(kind_of, Date):
        ctl.kind = "date"
    elif isinstance(kind_of, Timestamp):
        ctl.hint = ctl.hint or "RFC 3339, e.g. 2026-12-31T23:59:00Z"
    elif isinstance(kind_of, Reference):
        ctl.kind, ctl.picker = "select", kind_of.target
    elif isinstance(kind_of, TextList):
        ctl.kind = "textarea"
        ctl.value = "\n".join(value) if isinstance(value, list) else value
        ctl.hint = ctl.hint or "One per line."
    elif spec.write_only:
        # Never shown: left empty, it is generated (on create) or stays as it is (on an edit).
        ctl.kind, ctl.value = "password", ""
        ctl.hint = ctl.hint or "Left empty, it stays as it is (or gets its default)."
    elif isinstance(kind_of, Text):
        ctl.max_length = kind_of.max_length
        if kind_of.max_length > 300:
            ctl.kind = "textarea"
    if value is None:
        ctl.value = ""
    return ctl


def form_values(form: QueryParams, fields: Mapping[str, Field]) -> dict[str, Any]:
    """What the user entered, per field, as text (checkboxes as booleans): to draw the form again."""
    values: dict[str, Any] = {}
    for name, spec in fields.items():
        if isinstance(spec.type, Boolean):
            values[name] = "true" in form.getlist(name)
        else:
            values[name] = form.get(name, "")
    return values


def body_of(
    form: QueryParams, fields: Mapping[str, Field], *, current: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON body the API would receive for this form: on an edit (`current` given), only the fields
    that differ from the row."""
    body: dict[str, Any] = {}
    for name, spec in fields.items():
        value = _value(spec, form.getlist(name))
        if value is _OMIT:
            if current is not None and spec.nullable and current.get(name) is not None:
                body[name] = None  # emptied on an edit: cleared
            continue
        if current is not None and current.get(name) == value:
            continue
        body[name] = value
    return body


def _value(spec: Field, raw: list[str]) -> Any:
    kind = spec.type
    if isinstance(kind, Boolean):
        return "true" in raw
    text = raw[-1] if raw else ""
    if spec.write_only and text == "":
        return _OMIT  # never shown, so never "emptied": left as it is
    if isinstance(kind, TextList):
        return [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(kind, Text):
        return text
    if text.strip() == "":
        return None if spec.nullable and not isinstance(kind, Choice) else _OMIT
    if isinstance(kind, Integer):
        stripped = text.strip()
        return int(stripped) if _INTEGER.fullmatch(stripped) else text
    return text.strip()
