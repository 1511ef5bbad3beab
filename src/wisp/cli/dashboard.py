"""`wisp dashboard [--open]`: a one-time link to the dashboard on the control API's address."""
from __future__ import annotations

import argparse
import webbrowser

from .._config import default_port, wisp_home
from .._session import output as _output
from ..client import ClientError, ensure_server


def run(args: argparse.Namespace) -> int:
    try:
        client, _ = ensure_server(wisp_home(), args.port or default_port())
        answer = client.request("POST", "/v1/dashboard/login", {})
    except ClientError as exc:
        _output.fail(exc.message)
        return 1
    url = f"{client.info.admin_url}{answer['path']}"
    _output.say(url)
    _output.say("The link works once, within a minute; it signs this browser in (run this again for another).")
    if args.open and not webbrowser.open(url):
        _output.fail("Could not open a browser here; open the link above yourself.")
    return 0
