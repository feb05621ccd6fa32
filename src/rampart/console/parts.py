"""What the console is built from: the running service's pieces it uses, handed over by `create_app`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from rampart.access.actor import Roles
from rampart.auth.browser import BrowserSessions
from rampart.auth.oidc import OIDCClient
from rampart.auth.tokens import TokenIssuer
from rampart.db.pool import Database
from rampart.events.log import EventLog
from rampart.events.stream import LiveStream
from rampart.events.webhooks import Webhooks
from rampart.lib.bus import EventBus
from rampart.ops.metrics_history import MetricsHistory
from rampart.resources.manager import ResourceManager

# A readiness check: None when healthy, else a short reason (as /health/ready runs them).
Check = Callable[[], Awaitable[str | None]]


@dataclass(frozen=True)
class ConsoleParts:
    db: Database
    bus: EventBus
    managers: Mapping[str, ResourceManager]
    roles: Roles
    tokens: TokenIssuer
    sessions: BrowserSessions
    event_log: EventLog
    stream: LiveStream
    webhooks: Webhooks
    history: MetricsHistory
    checks: Mapping[str, Check]
    oidc: OIDCClient | None
    impersonation_ttl: int
    dispatcher_lag: Callable[[], float]
