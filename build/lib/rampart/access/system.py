"""The actor of command-line operations: an operator at the console, allowed everything."""

from __future__ import annotations

import uuid

from rampart.access.actor import Actor

SYSTEM_ID = uuid.UUID(int=0)


def system_actor(permissions: frozenset[str]) -> Actor:
    return Actor(user_id=SYSTEM_ID, role="system", session_id=SYSTEM_ID, permissions=permissions)
