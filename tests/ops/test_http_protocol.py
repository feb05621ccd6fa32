"""The HTTP protocol's transport sends the writes of one event-loop step together (one send per response),
and never loses one: on a real connection of the event loop `rampart serve` runs (uvloop)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable

import uvloop

from rampart.ops.http_protocol import _Coalescing

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
