"""Raw bytes to the gateway, for framing, smuggling and connection-cap tests (unit and e2e)."""
from __future__ import annotations

import contextlib
import socket


def send_and_read(port: int, raw: bytes, *, source: str = "127.0.0.1", timeout: float = 60) -> bytes:
    """What the gateway on 127.0.0.1:`port` sends back to `raw` before it closes the connection."""
    with contextlib.closing(socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                                     source_address=(source, 0))) as sock:
        sock.sendall(raw)
        data = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                data += chunk
    return data
