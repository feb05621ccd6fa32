"""Who is calling: the authenticated user, their role and what that role may do."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rampart.errors import Forbidden


@dataclass(frozen=True, slots=True)
class Actor:
    """The caller of a request, resolved from a verified access token and a live session."""

    user_id: uuid.UUID
    role: str
    session_id: uuid.UUID
    permissions: frozenset[str]
    # The admin acting as `user_id` (a session from impersonation): every event it writes names them too.
    impersonator_id: uuid.UUID | None = None

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def require(self, permission: str) -> None:
        """Raise Forbidden unless the actor's role grants `permission`."""
        if permission not in self.permissions:
            raise Forbidden("Your role lacks the permission for this action.")


class Roles:
    """Roles mapped to permissions, from configuration."""

    def __init__(self, mapping: Mapping[str, Sequence[str]]) -> None:
        self._map = {role: frozenset(perms) for role, perms in mapping.items()}
        self.names = tuple(self._map)

    def permissions(self, role: str) -> frozenset[str]:
        """A role's permissions; an unknown role has none."""
        return self._map.get(role, frozenset())

    def granting(self, permission: str) -> tuple[str, ...]:
        """The roles whose permissions include `permission`."""
        return tuple(role for role, perms in self._map.items() if permission in perms)
