"""The HTTP protocol `rampart serve` runs: uvicorn's httptools protocol with bounds on request heads
(decision 0025), which uvicorn bounds neither in time nor in size:

- **Time.** A connection that sends nothing, or its headers a byte at a time (slowloris), would be kept
  as long as the client likes. Here a complete request head must arrive within `head_timeout` seconds of
  the connection's opening, and again of the end of each response, or the connection is closed unanswered.
  A body is covered by the pipeline's time limit (`RAMPART_REQUEST_TIMEOUT`, 504), or after the response
  by this deadline again.
- **Size.** A head over `max_head_bytes` (64 KiB, as the largest defaults of common proxies) gets 431 and
  the connection is closed.

The answers this protocol (or uvicorn under it) writes without the application, because no request
reached it (a malformed request line, a bad `Content-Length`, a head over the bound) or because the
application failed before answering (uvicorn's last-resort 500), are dressed as the application's
own: a problem+json body, the security headers and an `X-Request-ID` that the log line repeats.
uvicorn wrote them as bare text/plain, without either.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from rampart.lib.ids import new_id_text
from rampart.lib.security_headers import API_CSP, SECURITY_HEADERS
from rampart.ops.balance import connection_closed

log = logging.getLogger("rampart.http")

DEFAULT_HEAD_TIMEOUT = 10.0
MAX_HEAD_BYTES = 65_536


def _problem(
    status: int, title: str, detail: str, code: str, request_id: str
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers (security headers and request id included) and body of a problem written below the app."""
    body = orjson.dumps(
        {
            "type": "about:blank",
            "title": title,
            "status": status,
            "detail": detail,
            "code": code,
            "request_id": request_id,
        }
    )
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
        *SECURITY_HEADERS,
        (b"content-security-policy", API_CSP),
        (b"connection", b"close"),
    ]
    return headers, body


class _Cycle(RequestResponseCycle):
    """uvicorn's request cycle, whose last-resort 500 (the app raised before answering: in practice a
    request cancelled by a shutdown past its grace period) is a dressed problem."""

    async def send_500_response(self) -> None:
        request_id = cast("dict[str, Any]", self.scope).get("rampart.request_id") or new_id_text()
        log.error("answered 500: the application did not answer", extra={"request_id": request_id})
        headers, body = _problem(
            500,
            "Internal server error",
            "An unexpected error occurred; it has been logged.",
            "internal_error",
            request_id,
        )
        await self.send({"type": "http.response.start", "status": 500, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})


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

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, but for the answer to a request it cannot parse (`_refuse`, with the request id
        # in the log line instead of uvicorn's bare warning).
        if self._awaiting_head:
            self._head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Rampart serves no WebSocket (`rampart serve` runs uvicorn with ws="none"): a request asking
            # to upgrade has been answered as plain HTTP, as RFC 9110 allows.
            pass
        except httptools.HttpParserError as exc:
            self._refuse(400, "Bad request", "The request is not valid HTTP/1.1.", "malformed_request", exc)
            return
        # Still in a head after this chunk: every byte counted since it began was part of it.
        if self._awaiting_head and self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
            self._refuse(
                431,
                "Request header fields too large",
                f"The request head is larger than {self.max_head_bytes} bytes.",
                "header_too_large",
                None,
            )

    def send_400_response(self, msg: str) -> None:
        # uvicorn's other way to refuse a request it cannot serve: dressed the same way.
        self._refuse(400, "Bad request", "The request is not valid HTTP/1.1.", "malformed_request", None)

    def _refuse(self, status: int, title: str, detail: str, code: str, cause: Exception | None) -> None:
        """Answer a request the application never sees with a dressed problem, then close."""
        if self.transport.is_closing():
            return
        request_id = new_id_text()
        log.warning(
            "refused a request below the application: %s %s",
            status,
            cause or code,
            extra={"request_id": request_id, "status": status},
        )
        headers, body = _problem(status, title, detail, code, request_id)
        head = [STATUS_LINE[status]]
        for name, value in (*self.server_state.default_headers, *headers):
            head += [name, b": ", value, b"\r\n"]
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self.transport.close()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        cycle.__class__ = _Cycle  # same layout, one method more: cheaper than building a second object
        super()._start_asgi_task(cycle, app)

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
