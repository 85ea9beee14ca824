"""The lenient GET (asyncmigrate/rawget.py) reads Glance's "Content-Length: None" answers and
always closes its own connection, a cancellation included."""

from __future__ import annotations

import asyncio

import anyio

from asyncmigrate.rawget import raw_get


async def _silent_server(closed: asyncio.Event) -> tuple[asyncio.Server, int]:
    """A server that accepts, reads the request and never answers; ``closed`` is set on EOF."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(4096):
            pass
        closed.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_cancelled_request_closes_its_connection() -> None:
    """Cancelled while the server has not answered yet: the socket is closed at once, not left to the GC."""
    closed = asyncio.Event()
    server, port = await _silent_server(closed)
    async with server:
        with anyio.move_on_after(0.3):
            async with raw_get(
                f"http://127.0.0.1:{port}/v2/images/x/file", {}, ssl_context=False, chunk_size=4096,
                connect_timeout=5, idle=60,
            ):  # fmt: skip
                raise AssertionError("no answer can have come")
        with anyio.fail_after(2):
            await closed.wait()


async def test_body_without_a_valid_length_is_read_until_close() -> None:
    """'Content-Length: None' is taken as no length: the body is whatever comes until the server closes."""
    body = bytes(range(256)) * 100

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: None\r\nContent-Type: application/octet-stream\r\n\r\n")
        writer.write(body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with (
        server,
        raw_get(f"http://127.0.0.1:{port}/f", {}, ssl_context=False, chunk_size=1000, connect_timeout=5, idle=5) as raw,
    ):
        got = b"".join([chunk async for chunk in raw.chunks()])
    assert raw.status == 200 and raw.content_length is None and got == body
