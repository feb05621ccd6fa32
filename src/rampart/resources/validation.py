"""Strict validation of request bodies against a resource declaration.

Unknown fields and server-owned fields are refused (no mass assignment); JSON types are strict; every
bad field is reported, not just the first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rampart.errors import FieldError, ValidationFailed
from rampart.resources.fields import FieldInvalid
from rampart.resources.spec import MISSING, Field, Resource

# The `field` of an error about the body as a whole: "" is the JSON Pointer of the whole document (RFC
# 6901), and no declared field can have that name (a field named `body` can).
WHOLE_BODY = ""


def _not_object() -> ValidationFailed:
    return ValidationFailed([FieldError(WHOLE_BODY, "invalid_type", "The body must be a JSON object.")])


def _check(name: str, field: Field, value: Any, errors: list[FieldError]) -> Any:
    if value is None:
        if field.nullable:
            return None
        errors.append(FieldError(name, "null_not_allowed", "Must not be null."))
        return MISSING
    try:
        return field.type.check(value)
    except FieldInvalid as exc:
        errors.append(FieldError(name, exc.code, exc.message))
        return MISSING


def _refuse_unknown(
    resource: Resource, body: dict[str, Any], errors: list[FieldError], *, update: bool
) -> dict[str, Field]:
    """The fields of `body` a client may write; an error for each other name."""
    fields, allowed = resource.all_fields, {}
    for name in body:
        field = fields.get(name)
        if field is None:
            errors.append(FieldError(str(name)[:100], "unknown_field", "Is not a field of this resource."))
        elif field.read_only:
            errors.append(FieldError(name, "read_only", "Is set by the server and cannot be written."))
        elif update and field.immutable:
            errors.append(FieldError(name, "immutable", "Is set when the item is created and cannot change."))
        elif resource.parent is not None and name == resource.parent.field:
            errors.append(FieldError(name, "read_only", "Is given by the URL."))
        else:
            allowed[name] = field
    return allowed


def validate_create(resource: Resource, body: Any, *, parent_set: bool = False) -> dict[str, Any]:
    """The values to insert: given fields checked, defaults filled, required ones demanded."""
    if not isinstance(body, dict):
        raise _not_object()
    errors: list[FieldError] = []
    _refuse_unknown(resource, body, errors, update=False)
    fields = resource.writable_fields
    if parent_set and resource.parent is not None:
        fields = {n: f for n, f in fields.items() if n != resource.parent.field}
    data = _given_or_default(fields, body, errors)
    if errors:
        raise ValidationFailed(errors)
    return data


def validate_fields(fields: Mapping[str, Field], body: Any) -> dict[str, Any]:
    """A body of fields declared for it alone (an action's), held to the rules of a create's."""
    if not isinstance(body, dict):
        raise _not_object()
    errors = [
        FieldError(str(name)[:100], "unknown_field", "Is not a field of this body.")
        for name in body
        if name not in fields
    ]
    data = _given_or_default(fields, body, errors)
    if errors:
        raise ValidationFailed(errors)
    return data


def _given_or_default(
    fields: Mapping[str, Field], body: dict[str, Any], errors: list[FieldError]
) -> dict[str, Any]:
    """Each field's checked value, its default when absent (required ones demanded)."""
    data: dict[str, Any] = {}
    for name, field in fields.items():
        if name in body:
            value = _check(name, field, body[name], errors)
            if value is not MISSING:
                data[name] = value
        elif field.required:
            errors.append(FieldError(name, "required", "Is required."))
        elif field.default is not MISSING:
            data[name] = field.new_default()
        elif field.nullable:
            data[name] = None
    return data


def validate_update(resource: Resource, body: Any) -> dict[str, Any]:
    """The values to change; absent fields stay as they are."""
    if not isinstance(body, dict):
        raise _not_object()
    errors: list[FieldError] = []
    # Check the writable fields even when others were refused: every bad field is reported at once.
    data = _given_or_default(_refuse_unknown(resource, body, errors, update=True), body, errors)
    if errors:
        raise ValidationFailed(errors)
    return data
