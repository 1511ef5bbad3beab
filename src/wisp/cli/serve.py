"""`wisp serve script.py`: an ephemeral app that follows your edits until Ctrl-C."""
from __future__ import annotations

import argparse

from .._session import output as _output
from .._session.package import PackageError, Target
from .._session.serve import serve
from ..exception import Error


def run(args: argparse.Namespace) -> int:
    try:
        serve(Target.parse(args.script), args.port)
    except PackageError as exc:
        _output.fail(exc.args[0])
        return 1
    except Error as exc:  # the script does not import, or the server refused it
        _output.fail(str(exc))
        return 1
    return 0
