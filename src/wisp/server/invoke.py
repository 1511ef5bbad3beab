"""The server calling a function in one of its containers: one POST over the container's socket.

Used for spawned calls, which the server runs itself (`.remote()` goes through the gateway).
"""
from __future__ import annotations

import asyncio

import h11

from .._call_wire import CONTENT_TYPE, KIND_HEADER
from .._protocol import tcp_address

READ_SIZE = 256 * 1024


class InvokeBroken(Exception):
    """The container went away before the answer ended (it crashed, or was killed)."""


async def invoke(socket_path: str, data: bytes) -> bytes:
    """Send a call's input; return the whole answer (its frames). Raises InvokeBroken."""
    try:
        address = tcp_address(socket_path)
        if address is None:
            reader, writer = await asyncio.open_unix_connection(socket_path)
        else:  # a container on a cluster's node
            reader, writer = await asyncio.open_connection(address[0], address[1])
    except OSError as exc:
        raise InvokeBroken(f"could not connect to the container ({exc})") from None
    conn = h11.Connection(h11.CLIENT)
    headers = [("host", "container"), ("content-type", CONTENT_TYPE), ("content-length", str(len(data))),
               (KIND_HEADER, "remote"), ("connection", "close")]
    try:
        writer.write(conn.send(h11.Request(method="POST", target="/", headers=headers)) or b"")
        writer.write(conn.send(h11.Data(data=data)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        return await _answer(conn, reader)
    except (OSError, h11.ProtocolError) as exc:
        raise InvokeBroken(f"the connection to the container broke ({exc})") from None
    finally:
        writer.close()


async def _answer(conn: h11.Connection, reader: asyncio.StreamReader) -> bytes:
    status = 0
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            chunk = await reader.read(READ_SIZE)
            conn.receive_data(chunk)
            if not chunk and conn.their_state is not h11.DONE:
                raise InvokeBroken("the container closed the connection before its answer ended")
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            break
    if status != 200:
        raise InvokeBroken(f"the container answered {status}: {bytes(body[:200]).decode(errors='replace')}")
    return bytes(body)
