"""`wisp modal env`: the environment that points Modal's own client at this wisp server.

`eval "$(wisp modal env)"`, then `modal app list`, `modal deploy app.py`, ... Only the export
lines go to stdout (eval runs them); anything else is said on stderr.
"""
from __future__ import annotations

import argparse
import shlex
import sys

from .._config import default_port, wisp_home
from ..client import ClientError, ensure_server
from ..server.modal_api.tokens import read_modal_token


def env_lines(url: str, token_id: str, token_secret: str) -> list[str]:
    """The export lines, quoted for any POSIX shell."""
    values = {"MODAL_SERVER_URL": url, "MODAL_TOKEN_ID": token_id, "MODAL_TOKEN_SECRET": token_secret}
    return [f"export {name}={shlex.quote(value)}" for name, value in values.items()]


def run(args: argparse.Namespace) -> int:
    home = wisp_home()
    try:
        client, started = ensure_server(home, args.port or default_port())
    except ClientError as exc:
        print(f"Error: {exc.message}", file=sys.stderr)
        return 1
    if started:
        print(f"Started the wisp server in the background (pid {client.info.pid}).", file=sys.stderr)
    if not client.info.modal_port:
        print("Error: this wisp server does not serve Modal's client API: it was started with --modal-port 0, or "
              "the `modal` extra is missing (see $WISP_HOME/server.log). Install it with `pip install "
              "'wisp[modal]'`, then `wisp server stop` and start the server again.", file=sys.stderr)
        return 1
    token = read_modal_token(home)
    if token is None:
        print(f"Error: no Modal token in {home}; restart the server (`wisp server stop`) to make one.",
              file=sys.stderr)
        return 1
    print("\n".join(env_lines(f"http://127.0.0.1:{client.info.modal_port}", token.id, token.secret)))
    return 0
