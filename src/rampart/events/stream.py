"""The live stream: `GET /api/v1/events/stream`, Server-Sent Events of the events the caller may see.

Each client reads the event log (`EventLog`, so visibility is the log's, decided in SQL) from its
cursor whenever the database announces new events. The announcement is the `rampart_events`
notification, heard on one LISTEN connection per worker process; it reaches every worker of every
instance, so fan-out needs nothing else. Polling every `poll_interval` seconds covers a lost listener.

- **Resume.** `Last-Event-ID` (sent by `EventSource` when it reconnects) or `?after=` starts the stream
  after that event, from the log; without either it starts now.
- **Late commits.** Ids are made before their transaction commits, so an event may become visible
  after a later id was already sent. Each read goes back `overlap` seconds behind the newest id sent
  and skips ids already sent, so such an event still goes out (once).
- **Heartbeats.** A comment line every `heartbeat` seconds keeps proxies from closing an idle stream;
  the caller's session is checked again at the same moment, so a revoked session ends its streams.
- **Slow clients.** Events wait for the client in a queue of at most `buffer` events, and one write may
  take at most `send_timeout` seconds. A client that falls behind either bound is cut off (its memory
  is bounded); it reconnects with `Last-Event-ID` and loses nothing.
- **Many streams.** Each open stream costs a reader of the log on every wake-up, so one user may hold
  at most `max_per_user` streams per worker process; one more gets 429 `too_many_streams`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from rampart.access.actor import Actor
from rampart.db.listener import Listener
from rampart.errors import FieldError, InvalidQuery, RampartError, RateLimited
from rampart.events.dispatcher import CHANNEL
from rampart.events.log import EventLog, LogQuery, parse_log_query
from rampart.events.openapi import STREAM_MESSAGE, log_parameters
from rampart.lib.ids import parse_uuid
from rampart.resources.endpoints import Call, RouteSpec
from rampart.resources.openapi_parts import headers, problems
from rampart.resources.routes import API_PREFIX

log = logging.getLogger("rampart.events.stream")

# Checks the caller again (from the request's Authorization header); raises when the session is over.
Reauthenticate = Callable[[str | None], Awaitable[Actor]]


class _CutOff(Exception):
    """The client is too slow: its queue is full."""


class TooManyStreams(RateLimited):
    code = "too_many_streams"
    title = "Too many streams"


def _floor(ms: int) -> uuid.UUID:
    """The smallest UUIDv7 of millisecond `ms`: `id > _floor(ms)` holds for every id made from then on."""
    return uuid.UUID(int=max(ms, 0) << 80)


def _ms(event_id: uuid.UUID) -> int:
    return event_id.int >> 80


class LiveStream:
    """The SSE endpoint and the worker's one listener connection that wakes its clients."""

    def __init__(
        self,
        *,
        log: EventLog,
        listener: Listener | None,
        reauthenticate: Reauthenticate | None = None,
        heartbeat: float = 15.0,
        buffer: int = 256,
        send_timeout: float = 10.0,
        overlap: float = 15.0,
        poll_interval: float = 5.0,
        batch: int = 100,
        max_per_user: int = 10,
    ) -> None:
        self.log = log
        self._reauthenticate = reauthenticate
        self.heartbeat = heartbeat
        self.buffer = buffer
        self.send_timeout = send_timeout
        self.overlap_ms = int(overlap * 1000)
        self.poll_interval = poll_interval
        self.batch = batch
        self.max_per_user = max_per_user
        self._open: dict[uuid.UUID, int] = {}  # streams per user, in this process
        self._clients: set[asyncio.Event] = set()
        if listener is not None:  # without one, clients only poll
            # After a lost connection, clients look at once for what they may have missed.
            listener.subscribe(CHANNEL, self._wake_all, on_up=self._wake_all)

    # ----- waking the clients -----------------------------------------------------------------------
    def start(self) -> None:
        """Nothing runs before the first client."""

    async def stop(self) -> None:
        """Each stream ends with its client."""

    def _wake_all(self, *_: Any) -> None:
        for wake in self._clients:
            wake.set()

    # ----- the route ---------------------------------------------------------------------------------
    def route_spec(self) -> RouteSpec:
        return RouteSpec(
            "GET",
            f"{API_PREFIX}/events/stream",
            self._handle,
            "events.stream",
            tags=("events",),
            summary="Live stream (Server-Sent Events) of the events the caller may see",
            streaming=True,
            openapi={
                "description": (
                    "`text/event-stream`: one message per event (`id:` the event id, `data:` the `Event` as "
                    "JSON), a comment as heartbeat, and `retry: 3000`. The response never ends by itself: "
                    "read it with an SSE client (EventSource, or a streaming HTTP read), not a generated "
                    "client, which waits for the end of the body. Reconnect with `Last-Event-ID` to resume "
                    "where you left off. Takes the filters of `GET /api/v1/events` (not `limit`)."
                ),
                "parameters": [
                    *log_parameters(self.log.sources),
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "format": "uuid"},
                        "description": "The id of the last event received: the stream resumes after it.",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The stream",
                        "headers": headers("Cache-Control"),
                        # Each message, as SSE parsers see it: the event id, and the Event as JSON.
                        "content": {"text/event-stream": {"schema": STREAM_MESSAGE}},
                    },
                    **problems(400),
                },
            },
        )

    async def _handle(self, call: Call) -> Any:
        actor = call.user
        if "limit" in call.request.query_params:
            message = "limit does not apply to the stream."
            raise InvalidQuery(message, errors=[FieldError("limit", "unknown_parameter", message)])
        query = parse_log_query(call.request.query_params, sources=self.log.sources)
        last = call.request.headers.get("last-event-id")
        if last is not None:
            resume = parse_uuid(last.strip())
            if resume is None:
                message = "Last-Event-ID must be an event id."
                raise InvalidQuery(message, errors=[FieldError("Last-Event-ID", "invalid", message)])
            query = replace(query, after=resume)
        if self._open.get(actor.user_id, 0) >= self.max_per_user:
            raise TooManyStreams(
                f"At most {self.max_per_user} live streams per user; close one first.", retry_after=3
            )
        # Counted at once, with no await since the check, so concurrent requests cannot all pass it; the
        # stream gives it back when it ends.
        self._open[actor.user_id] = self._open.get(actor.user_id, 0) + 1
        return _Stream(self, actor, query, call.request.headers.get("authorization"))

    def _release(self, user_id: uuid.UUID) -> None:
        left = self._open.get(user_id, 0) - 1
        if left > 0:
            self._open[user_id] = left
        else:
            self._open.pop(user_id, None)


class _Stream:
    """One client's stream, as an ASGI response."""

    def __init__(self, owner: LiveStream, actor: Actor, query: LogQuery, authorization: str | None) -> None:
        self.owner = owner
        self.actor = actor
        self.query = replace(query, limit=owner.batch)
        self.authorization = authorization
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=owner.buffer)
        self.wake = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._serve(receive, send)
        finally:
            self.owner._release(self.actor.user_id)

    async def _serve(self, receive: Receive, send: Send) -> None:
        owner = self.owner
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),  # nginx: pass each message on at once
                ],
            }
        )
        owner._clients.add(self.wake)
        self.wake.set()  # read the log once at the start: the resumed part, if any
        tasks = [
            asyncio.create_task(self._produce()),
            asyncio.create_task(self._deliver(send)),
            asyncio.create_task(_until_disconnect(receive)),
        ]
        reason = "disconnected"
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if isinstance(exc, _CutOff | TimeoutError):
                    reason = "too slow"
                elif isinstance(exc, RampartError):
                    reason = "session ended"
                elif exc is not None:
                    reason = "failed"
                    log.error("live stream failed", exc_info=exc)
        finally:
            owner._clients.discard(self.wake)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        log.info("live stream of user %s closed: %s", self.actor.user_id, reason)
        if reason != "too slow":  # a stalled client cannot take even the end of the response
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _produce(self) -> None:
        owner = self.owner
        low = self.query.after or _floor(int(time.time() * 1000))
        newest = _ms(low)
        sent: dict[uuid.UUID, None] = {}  # ids sent within the overlap window, oldest first
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(owner.poll_interval):
                    await self.wake.wait()
            self.wake.clear()
            after = max(low, _floor(newest - owner.overlap_ms))
            for _ in range(1000):  # bounded: a huge backlog is read over several wake-ups
                events, more = await owner.log.page(self.actor, replace(self.query, after=after))
                for event in events:
                    event_id = uuid.UUID(event["id"])
                    if event_id in sent:
                        continue
                    try:
                        self.queue.put_nowait(event)
                    except asyncio.QueueFull:
                        raise _CutOff from None
                    sent[event_id] = None
                    newest = max(newest, _ms(event_id))
                if events:
                    after = uuid.UUID(events[-1]["id"])
                if not more:
                    break
            horizon = newest - owner.overlap_ms
            while sent and _ms(next(iter(sent))) < horizon:
                sent.pop(next(iter(sent)))

    async def _deliver(self, send: Send) -> None:
        owner = self.owner

        async def write(chunk: bytes) -> None:
            async with asyncio.timeout(owner.send_timeout):  # a stalled client is cut off
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

        await write(b"retry: 3000\n\n")
        checked = time.monotonic()
        while True:
            event: dict[str, Any] | None = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(owner.heartbeat):
                    event = await self.queue.get()
            if owner._reauthenticate is not None and time.monotonic() - checked >= owner.heartbeat:
                await owner._reauthenticate(self.authorization)  # raises once the session is over
                checked = time.monotonic()
            if event is None:
                await write(b": heartbeat\n\n")
                continue
            data = orjson.dumps(event, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)
            await write(b"id: " + event["id"].encode() + b"\ndata: " + data + b"\n\n")


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
