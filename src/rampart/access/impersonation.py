"""Who may act as whom: the rules of impersonation, as pure functions of roles.

Role names are configuration, so "an admin" is read from what a role may do, never from its name:
- a user may impersonate while their role grants `users:impersonate`;
- a user may be impersonated unless their role grants `users:manage` or `users:impersonate`: acting as
  another administrator would let one admin act with another's authority and hide behind their name.

The same rules decide whether an impersonation session may still be used, on every session check: when
the impersonator loses `users:impersonate` or the target gains an administrative permission, the session
ends with no further action from anyone.
"""

from __future__ import annotations

from rampart.access.actor import Roles

MANAGE_USERS = "users:manage"
IMPERSONATE = "users:impersonate"
ADMINISTRATIVE = frozenset({MANAGE_USERS, IMPERSONATE})


def may_impersonate(roles: Roles, role: str) -> bool:
    """Whether a user of `role` may open impersonation sessions."""
    return IMPERSONATE in roles.permissions(role)


def may_be_impersonated(roles: Roles, role: str) -> bool:
    """Whether a user of `role` may be impersonated: not when the role administers users."""
    return roles.permissions(role).isdisjoint(ADMINISTRATIVE)


def impersonation_holds(roles: Roles, *, impersonator_role: str | None, target_role: str) -> bool:
    """Whether an impersonation session may still be used.

    `impersonator_role` is None when the impersonator is disabled or the session that opened this one has
    ended (revoked or expired).
    """
    return (
        impersonator_role is not None
        and may_impersonate(roles, impersonator_role)
        and may_be_impersonated(roles, target_role)
    )
