"""Starting and stopping Modal's client API with the server. Imports nothing of the `modal`
extra until a server starts it, so a wisp without the extra runs as before and says how to
turn it on."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .tokens import read_modal_token

if TYPE_CHECKING:
    from grpclib.server import Server

    from ..apps import AppManager

HOST = "127.0.0.1"  # like the control API: it deploys code, so loopback only


class ModalAPI:
    def __init__(self, server: Server, port: int) -> None:
        self.server = server
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def start_modal_api(manager: AppManager, home: Path, port: int) -> ModalAPI | None:
    """Modal's client API on `port` (0: off, None returned). A missing extra or a port in use
    is said in the server log and leaves the API off: wisp's own apps must still serve."""
    if port == 0:
        return None
    try:
        from .server import build_server
    except ImportError as exc:
        print(f"wisp server: Modal's client API is off: the `modal` extra is not installed ({exc.name} missing). "
              "Install it with `pip install 'wisp[modal]'` and restart the server.", file=sys.stderr, flush=True)
        return None
    token = read_modal_token(home, create=True)
    assert token is not None
    server = build_server(manager, token)
    try:
        await server.start(HOST, port)
    except OSError as exc:
        print(f"wisp server: Modal's client API is off: port {port} cannot be used ({exc.strerror}). Start the "
              "server with another `--modal-port` (or WISP_MODAL_PORT), or 0 to turn it off.",
              file=sys.stderr, flush=True)
        return None
    return ModalAPI(server, port)
