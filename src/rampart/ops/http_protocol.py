"""The HTTP protocol `rampart serve` runs: uvicorn's httptools protocol with bounds on request heads.

uvicorn bounds neither the time nor the size of a request head:

- **Time.** No timer runs while a head is incomplete. A connection that opens and sends nothing, or sends
  its headers one byte at a time (slowloris), is kept for as long as the client likes, and a few
  thousand of them use up the worker's file descriptors. Here a connection must deliver a complete
  request head within `head_timeout` seconds of opening, and again of the end of each response;
  otherwise it is closed without an answer. Bodies need no timer of their own: the pipeline's request
  time limit covers the upload (`RAMPART_REQUEST_TIMEOUT`, 504), and a body still trickling in after the
  response is covered by this deadline again.
- **Size.** Header lines are buffered without limit: one request could carry gigabytes of headers. A
  head over `max_head_bytes` (64 KiB, as much as the largest defaults of common proxies) gets 431 and
  the connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rampart.ops.balance import connection_closed

DEFAULT_HEAD_TIMEOUT = 10.0
MAX_HEAD_BYTES = 65_536
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
    b"x-content-type-options: nosniff\r\nconnection: close\r\n\r\n"
)


class HeadDeadlineProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that closes a connection whose next request head is late."""

    def __init__(
        self,
        *args: Any,
        head_timeout: float = DEFAULT_HEAD_TIMEOUT,
        max_head_bytes: int = MAX_HEAD_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout = head_timeout
        self.max_head_bytes = max_head_bytes
        self._head_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True  # the next bytes belong to a request head
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _Coalescing(transport, self.loop)  # type: ignore[assignment]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        connection_closed()  # the worker's connection count (rampart.ops.balance)

    def _unsupported_upgrade_warning(self) -> None:
        # Rampart serves no WebSocket (`rampart serve` runs uvicorn with ws="none"): a request asking to
        # upgrade is answered as plain HTTP, as RFC 9110 allows, without two warnings per request.
        pass

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # Still in a head after this chunk: every byte counted since it began was part of it.
        if self._awaiting_head and self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
            self.transport.write(_TOO_LARGE)
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._awaiting_head, self._head_bytes = False, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._awaiting_head = True  # whatever comes next is the next request's head
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Armed only when no request is in hand: a pipelined one may have been started just now.
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout, self._expire)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expire(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being served; its own time limit applies
        if not self.transport.is_closing():
            self.transport.close()


class _Coalescing:
    """A connection's transport whose writes of one event-loop step leave in one send.

    uvicorn writes a response's head and its body separately, and uvloop sends each at once: two system
    calls and two TCP segments per response. The writes of a step are joined and sent when the step
    ends (or before the connection closes). Everything else is the transport's own.
    """

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
