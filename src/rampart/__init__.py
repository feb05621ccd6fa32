"""Rampart: a resource-oriented HTTP API on PostgreSQL.

This module is the public API: everything an application writes against is importable from here, and
`__all__` lists it. Anything else (`rampart.resources.manager`, `rampart.auth`, ...) is internal and may
change between releases. See docs/guide/build-your-app.md.

    from rampart import Field, Policy, Resource, Text, create_app

Names are loaded on first use, so `import rampart` (and the command line) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    # Declaring resources
    "Resource": "rampart.resources.spec",
    "Field": "rampart.resources.spec",
    "Policy": "rampart.resources.spec",
    "Parent": "rampart.resources.spec",
    "Hooks": "rampart.resources.spec",
    "Action": "rampart.resources.actions",
    "Binder": "rampart.resources.spec",
    "Predicate": "rampart.resources.spec",
    "Placement": "rampart.resources.placement",
    "Alias": "rampart.resources.placement",
    # Field types
    "FieldType": "rampart.resources.fields",
    "FieldInvalid": "rampart.resources.fields",
    "Text": "rampart.resources.fields",
    "TextList": "rampart.resources.fields",
    "Integer": "rampart.resources.fields",
    "Boolean": "rampart.resources.fields",
    "Choice": "rampart.resources.fields",
    "Date": "rampart.resources.fields",
    "Timestamp": "rampart.resources.fields",
    "Id": "rampart.resources.fields",
    "Reference": "rampart.resources.fields",
    # Policy predicates, to combine with your own
    "owned_by": "rampart.resources.policies",
    "everyone": "rampart.resources.policies",
    "nobody": "rampart.resources.policies",
    "any_of": "rampart.resources.policies",
    "all_of": "rampart.resources.policies",
    "with_role": "rampart.resources.policies",
    # Who is calling, and what hooks and manager calls receive
    "Actor": "rampart.access.actor",
    "Context": "rampart.resources.context",
    "HookContext": "rampart.resources.context",
    "ActionContext": "rampart.resources.context",
    "ResourceManager": "rampart.resources.manager",
    "Page": "rampart.resources.manager",
    # Errors a hook or a route may raise (each becomes its problem+json answer)
    "RampartError": "rampart.errors",
    "FieldError": "rampart.errors",
    "InvalidRequest": "rampart.errors",
    "Unauthorized": "rampart.errors",
    "Forbidden": "rampart.errors",
    "NotFound": "rampart.errors",
    "Conflict": "rampart.errors",
    "PreconditionFailed": "rampart.errors",
    "ValidationFailed": "rampart.errors",
    "ServiceUnavailable": "rampart.errors",
    # Your own routes and event subscribers
    "Route": "rampart.resources.endpoints",
    "Call": "rampart.resources.endpoints",
    "json_response": "rampart.resources.endpoints",
    "empty_response": "rampart.resources.endpoints",
    "Subscriber": "rampart.events.dispatcher",
    # The application
    "create_app": "rampart.app",
    "Rampart": "rampart.app",
    "Settings": "rampart.config",
}

__all__ = [
    "Action",
    "ActionContext",
    "Actor",
    "Alias",
    "Binder",
    "Boolean",
    "Call",
    "Choice",
    "Conflict",
    "Context",
    "Date",
    "Field",
    "FieldError",
    "FieldInvalid",
    "FieldType",
    "Forbidden",
    "HookContext",
    "Hooks",
    "Id",
    "Integer",
    "InvalidRequest",
    "NotFound",
    "Page",
    "Parent",
    "Placement",
    "Policy",
    "PreconditionFailed",
    "Predicate",
    "Rampart",
    "RampartError",
    "Reference",
    "Resource",
    "ResourceManager",
    "Route",
    "ServiceUnavailable",
    "Settings",
    "Subscriber",
    "Text",
    "TextList",
    "Timestamp",
    "Unauthorized",
    "ValidationFailed",
    "all_of",
    "any_of",
    "create_app",
    "empty_response",
    "everyone",
    "json_response",
    "nobody",
    "owned_by",
    "with_role",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rampart' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])


if TYPE_CHECKING:
    from rampart.access.actor import Actor
    from rampart.app import Rampart, create_app
    from rampart.config import Settings
    from rampart.errors import (
        Conflict,
        FieldError,
        Forbidden,
        InvalidRequest,
        NotFound,
        PreconditionFailed,
        RampartError,
        ServiceUnavailable,
        Unauthorized,
        ValidationFailed,
    )
    from rampart.events.dispatcher import Subscriber
    from rampart.resources.actions import Action
    from rampart.resources.context import ActionContext, Context, HookContext
    from rampart.resources.endpoints import Call, Route, empty_response, json_response
    from rampart.resources.fields import (
        Boolean,
        Choice,
        Date,
        FieldInvalid,
        FieldType,
        Id,
        Integer,
        Reference,
        Text,
        TextList,
        Timestamp,
    )
    from rampart.resources.manager import Page, ResourceManager
    from rampart.resources.placement import Alias, Placement
    from rampart.resources.policies import all_of, any_of, everyone, nobody, owned_by, with_role
    from rampart.resources.spec import Binder, Field, Hooks, Parent, Policy, Predicate, Resource
