"""`wisp deploy script.py`: a persistent app that outlives the command and server restarts."""
from __future__ import annotations

import argparse

from .._session import output as _output
from .._session import push as _common
from .._session.package import PackageError, Target
from ..client import ClientError


def run(args: argparse.Namespace) -> int:
    try:
        target = Target.parse(args.script)
        _, _, app = _common.server_and_push(args.port, target, "deploy")
    except (PackageError, ClientError) as exc:
        _output.fail(exc.args[0] if isinstance(exc, PackageError) else exc.message)
        return 1
    _output.say(f"Deployed app {app['name']} (version {app['version']}). Its endpoints:")
    _output.endpoints(app)
    _output.say(f"`wisp app logs {app['id']}` shows its logs; `wisp app stop {app['id']}` stops it.")
    return 0
