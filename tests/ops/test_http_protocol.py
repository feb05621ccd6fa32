"""The HTTP protocol's transport sends the writes of one event-loop step together (one send per response),
and never loses one: on a real connection of the event loop `rampart serve` runs (uvloop)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import uvicorn
import uvloop

from rampart.ops.http_protocol import HeadDeadlineProtocol, _Coalescing
from tests.support import free_port

Check = Callable[[_Coalescing, socket.socket], Awaitable[None]]


def on_a_connection(check: Check) -> None:
    """Run `check` with our side of a real TCP connection (a uvloop transport, coalesced) and the peer's
    plain socket, in uvloop."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with socket.create_server(("127.0.0.1", 0)) as listening:
            transport, _ = await loop.create_connection(asyncio.Protocol, *listening.getsockname())
            peer, _ = listening.accept()
        peer.setblocking(False)
        try:
            await check(_Coalescing(transport, loop), peer)  # type: ignore[arg-type]
        finally:
            transport.abort()
            peer.close()

    uvloop.run(main())


def _received(peer: socket.socket) -> bytes:
    try:
        return peer.recv(65536)
    except BlockingIOError:
        return b""


async def _settle() -> None:
    for _ in range(3):  # the loop step ends, and the kernel hands the bytes over loopback
        await asyncio.sleep(0.01)


def test_a_head_and_body_written_in_one_step_leave_together() -> None:
    async def check(transport: _Coalescing, peer: socket.socket) -> None:
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(b"{}")
        assert _received(peer) == b""  # nothing is sent before the step ends...
        await _settle()
        assert _received(peer) == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"  # ...then all of it

    on_a_connection(check)


def test_writes_of_later_steps_are_sent_in_order() -> None:
    async def check(transport: _Coalescing, peer: socket.socket) -> None:
        for chunk in (b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"):  # a stream: one chunk per step
            transport.write(chunk)
            await _settle()
        assert _received(peer) == b"data: 1\n\ndata: 2\n\ndata: 3\n\n"

    on_a_connection(check)


def test_closing_sends_what_is_pending_first() -> None:
    async def check(transport: _Coalescing, peer: socket.socket) -> None:
        transport.write(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
        transport.close()
        assert transport.is_closing()  # the transport's own state shows through
        await _settle()
        assert _received(peer) == b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n"
        await _settle()
        assert peer.recv(10) == b""  # and then the connection is closed

    on_a_connection(check)


def test_an_aborted_connection_sends_nothing_more() -> None:
    async def check(transport: _Coalescing, peer: socket.socket) -> None:
        transport.write(b"partial")
        transport.abort()
        await _settle()
        with contextlib.suppress(ConnectionResetError):  # a reset, or the end: never the pending bytes
            assert peer.recv(10) == b""

    on_a_connection(check)


def test_the_last_resort_500_is_a_dressed_problem() -> None:
    # uvicorn answers for an app that raised before answering (in practice: a request cancelled by a
    # shutdown past its grace period); it wrote a bare text/plain 500 without security headers or id.
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        scope["rampart.request_id"] = "the-request-id"  # as the pipeline sets it first
        raise RuntimeError("failed before answering")

    async def main() -> httpx.Response:
        port = free_port()
        config = uvicorn.Config(
            failing, host="127.0.0.1", port=port, http=HeadDeadlineProtocol, lifespan="off", log_config=None
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                return await http.get("/anything")
        finally:
            server.should_exit = True
            await serving

    r = uvloop.run(main())
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["x-request-id"] == "the-request-id"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert r.json() == {
        "type": "about:blank",
        "title": "Internal server error",
        "status": 500,
        "detail": "An unexpected error occurred; it has been logged.",
        "code": "internal_error",
        "request_id": "the-request-id",
    }
