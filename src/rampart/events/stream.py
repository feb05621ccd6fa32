"""The live stream: `GET /api/v1/events/stream`, Server-Sent Events of the events the caller may see.

Each client reads the event log (`EventLog`, so visibility is the log's, decided in SQL) from its
cursor whenever the database announces new events. The announcement is the `rampart_events`
notification, or a row change announced on the channels of `also_wake_on` (a worker announces its own
changes after they commit, and their events with them: `rampart.resources.caching`), heard on one LISTEN
connection per worker process; it reaches every worker of every instance, so fan-out needs nothing else.
Polling every `poll_interval` seconds covers a lost listener.

- **Resume.** `Last-Event-ID` (sent by `EventSource` when it reconnects) or `?after=` starts the stream
  after that event, from the log; without either it starts now.
- **Late commits.** Ids are made before their transaction commits, so an event may become visible
  after a later id was already sent. Each read goes back `overlap` seconds behind the newest event in
  the log when the previous read began (whoever's it is) and skips ids already sent, so such an event
  still goes out (once), and what a read looks at stays bounded even for a caller who sees nothing.
- **The stream follows its session.** The sessions of all open streams of a process are read in one
  statement every `session_check` seconds and at once when a revocation, a disabled user or a role
  change is announced (`session_channel`, on the worker's listener): a stream whose session has ended
  is closed, and one whose role changed is closed too, so the client reconnects (`Last-Event-ID`) and
  what follows is filtered by the new role. From an announcement until that read, streams send
  nothing, and nothing queued is sent once the end is decided: an event committed after the change is
  announced after it, so it never goes out under the old role.
- **Heartbeats.** A comment line every `heartbeat` seconds keeps proxies from closing an idle stream;
  the caller's token is checked again at the same moment (an expired token ends the stream).
- **Slow clients.** A client more than `buffer` events behind, or whose write takes over `send_timeout`
  seconds, is cut off (its memory is bounded); it reconnects with `Last-Event-ID` and loses nothing.
- **Many streams.** Each costs a log read per wake-up: one user holds at most `max_per_user` streams per
  worker process; one more gets 429 `too_many_streams`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import replace
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from rampart.access.actor import Actor
from rampart.db.listener import Listener
from rampart.errors import RampartError, RateLimited, bad_query
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
# Of the session ids given, the live ones, with their (user id, role), read from the database.
SessionCheck = Callable[[Collection[uuid.UUID]], Awaitable[Mapping[uuid.UUID, tuple[uuid.UUID, str]]]]
# The same for one stream, its credential already bound.
Recheck = Callable[[], Awaitable[Actor]]


class TooManyStreams(RateLimited, code="too_many_streams", title="Too many streams"): ...


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
        sessions: SessionCheck | None = None,
        session_channel: str | None = None,
        session_check: float = 0.5,
        heartbeat: float = 15.0,
        buffer: int = 256,
        send_timeout: float = 10.0,
        overlap: float = 15.0,
        poll_interval: float = 5.0,
        batch: int = 100,
        max_per_user: int = 10,
        also_wake_on: Collection[str] = (),
    ) -> None:
        self.log = log
        self._reauthenticate = reauthenticate
        self._sessions = sessions
        # Half the revocation bound of API.md (1 s), so a missed announcement still ends a stream in time.
        self.session_check = session_check
        self.heartbeat = heartbeat
        self.buffer = buffer
        self.send_timeout = send_timeout
        self.overlap_ms = int(overlap * 1000)
        self.poll_interval = poll_interval
        self.batch = batch
        self.max_per_user = max_per_user
        self._streams: set[_Stream] = set()  # from the request to the end of the response
        self._recheck = asyncio.Event()
        self._announced = 0  # announcements heard: a check read before the last one clears nothing
        self._watcher: asyncio.Task[None] | None = None
        if listener is not None:  # without one, clients only poll
            # After a lost connection, clients look at once for what they may have missed.
            listener.subscribe(CHANNEL, self._wake_all, on_up=self._wake_all)
            for channel in also_wake_on:  # changes whose events come without a notification of their own
                listener.subscribe(channel, self._wake_all)
            if session_channel is not None and sessions is not None:
                # Any announcement (its payload is the authenticator's business) has every stream's session
                # read again: one statement, and announcements are rare. So does a reconnection, after
                # which announcements may have been missed.
                listener.subscribe(session_channel, self._sessions_changed, on_up=self._sessions_changed)

    def start(self) -> None:
        """Nothing runs before the first client."""

    async def stop(self) -> None:
        """Each stream ends with its client; the session watch stops here."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    def _wake_all(self, *_: Any) -> None:
        for stream in self._streams:
            stream.wake.set()

    def _sessions_changed(self, *_: Any) -> None:
        # Until the sessions are read again, no stream sends anything: a change committed after this
        # announcement (bob's next task, after the caller's demotion) is announced after it too, so it
        # cannot go out under the caller's old role.
        self._announced += 1
        for stream in self._streams:
            stream.cleared.clear()
        self._recheck.set()

    def _watch_sessions(self) -> None:
        """Run the session watch while streams are open (it ends with the last one)."""
        if self._sessions is not None and (self._watcher is None or self._watcher.done()):
            self._watcher = asyncio.get_running_loop().create_task(
                self._check_sessions(), name="rampart-stream-sessions"
            )

    async def _check_sessions(self) -> None:
        assert self._sessions is not None
        failing = False
        while self._streams:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.session_check):
                    await self._recheck.wait()
            self._recheck.clear()  # before reading: an announcement from now on is read again
            announced = self._announced
            streams = list(self._streams)
            if not streams:
                break
            try:
                live = await self._sessions({stream.actor.session_id for stream in streams})
            except Exception:
                # The database is unavailable: so are the streams' reads, and revocations (written there).
                log.log(
                    logging.DEBUG if failing else logging.WARNING,
                    "stream session check failed",
                    exc_info=True,
                )
                failing = True
                continue
            failing = False
            for stream in streams:
                state = live.get(stream.actor.session_id)
                if state is None or state[0] != stream.actor.user_id:
                    stream.end("session ended")
                elif state[1] != stream.actor.role:
                    stream.end("role changed")
                elif announced == self._announced:
                    stream.cleared.set()

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
                    "JSON), a comment as heartbeat, and `retry: 3000`. The response does not end by itself "
                    "while its session lives: read it with an SSE client (EventSource, or a streaming HTTP "
                    "read), not a generated client, which waits for the end of the body. It ends within a "
                    "second of its session ending (logout, revocation, the user disabled) and when the "
                    "caller's role changes: reconnect with `Last-Event-ID` to go on (under the new role) "
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
        authorization = call.request.headers.get("authorization")
        reauthenticate = self._reauthenticate
        recheck = (lambda: reauthenticate(authorization)) if reauthenticate is not None else None
        return await self.open(call, recheck=recheck)

    async def open(self, call: Call, *, recheck: Recheck | None) -> Any:
        """The stream for `call` (its query, its caller): what the route answers, and what another route
        that signs its callers in differently answers too (the console's, by its cookie). `recheck` checks
        the caller's session again at each heartbeat and raises once it is over."""
        actor = call.user
        if "limit" in call.request.query_params:
            raise bad_query("limit", "unknown_parameter", "limit does not apply to the stream.")
        query = parse_log_query(call.request.query_params, sources=self.log.sources)
        last = call.request.headers.get("last-event-id")
        if last is not None:
            resume = parse_uuid(last.strip())
            if resume is None:
                raise bad_query("Last-Event-ID", "invalid", "Last-Event-ID must be an event id.")
            query = replace(query, after=resume)
        if sum(stream.actor.user_id == actor.user_id for stream in self._streams) >= self.max_per_user:
            raise TooManyStreams(
                f"At most {self.max_per_user} live streams per user; close one first.", retry_after=3
            )
        # Counted at once, with no await since the check, so concurrent requests cannot all pass it.
        stream = _Stream(self, actor, query, recheck)
        self._streams.add(stream)
        return stream


class _Stream:
    """One client's stream, as an ASGI response."""

    def __init__(self, owner: LiveStream, actor: Actor, query: LogQuery, recheck: Recheck | None) -> None:
        self.owner = owner
        self.actor = actor
        self.query = replace(query, limit=owner.batch)
        self.recheck = recheck
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=owner.buffer)
        self.wake = asyncio.Event()
        self.ended = asyncio.Event()  # set by `end`: the stream closes, sending nothing more
        self.reason: str | None = None
        # Cleared while the session is being read again after an announcement: nothing is sent meanwhile.
        self.cleared = asyncio.Event()
        self.cleared.set()

    def end(self, reason: str) -> None:
        """Close the stream (its session ended, its role changed): nothing more is sent."""
        if self.reason is None:
            self.reason = reason
            self.ended.set()
            self.cleared.set()  # a waiting delivery wakes, and sees the end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        owner = self.owner
        tasks: list[asyncio.Task[Any]] = []
        reason = "disconnected"
        try:
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
            owner._watch_sessions()
            self.wake.set()  # read the log once at the start: the resumed part, if any
            tasks = [
                asyncio.create_task(self._produce()),
                asyncio.create_task(self._deliver(send)),
                asyncio.create_task(_until_disconnect(receive)),
                asyncio.create_task(self.ended.wait()),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if self.reason is not None:
                    reason = self.reason
                elif isinstance(exc, asyncio.QueueFull | TimeoutError):
                    reason = "too slow"
                elif isinstance(exc, RampartError):
                    reason = "session ended"
                elif exc is not None:
                    reason = "failed"
                    log.error("live stream failed", exc_info=exc)
        finally:
            owner._streams.discard(self)
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
        # The newest event in the log (anyone's) when the last complete read began: every event made more
        # than `overlap` before it had committed by then, and that read found it.
        newest = _ms(low)
        sent: dict[uuid.UUID, None] = {}  # ids sent within the overlap window, oldest first
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(owner.poll_interval):
                    await self.wake.wait()
            self.wake.clear()
            top = await owner.log.newest()
            after = max(low, _floor(newest - owner.overlap_ms))
            for _ in range(1000):  # bounded: a huge backlog is read over several wake-ups
                events, more = await owner.log.page(self.actor, replace(self.query, after=after))
                for event in events:
                    event_id = uuid.UUID(event["id"])
                    if event_id in sent:
                        continue
                    self.queue.put_nowait(event)  # asyncio.QueueFull: the client is too slow
                    sent[event_id] = None
                    newest = max(newest, _ms(event_id))
                if events:
                    after = uuid.UUID(events[-1]["id"])
                if not more:
                    if top is not None:
                        newest = max(newest, _ms(top))
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
            if self.recheck is not None and time.monotonic() - checked >= owner.heartbeat:
                await self.recheck()  # raises once the session is over
                checked = time.monotonic()
            if event is None:
                await write(b": heartbeat\n\n")
                continue
            await self.cleared.wait()
            if self.ended.is_set():
                return  # its session ended (or its role changed) while it waited: not for this caller
            data = orjson.dumps(event, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)
            await write(b"id: " + event["id"].encode() + b"\ndata: " + data + b"\n\n")


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
