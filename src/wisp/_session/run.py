"""`with stub.run():` and `wisp run`: an ephemeral app for the length of a block, held by
heartbeats like a served one; its functions are called from this process meanwhile."""
from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .._functions import CallContext, set_context
from ..client import ClientError
from ..exception import ExecutionError, InvalidError
from . import push as _common
from .package import PackageError, Target
from .serve import _defining_module, _heartbeats, _stop

if TYPE_CHECKING:
    from .._app import Stub


@contextlib.contextmanager
def run_stub(stub: Stub) -> Iterator[Stub]:
    module = _defining_module(stub)
    attr = next((name for name, value in vars(module).items() if value is stub), None)
    script = getattr(module, "__file__", None)
    if script is None or attr is None:
        raise InvalidError("stub.run() needs the stub to be a module-level name in a script file.")
    owner = uuid.uuid4().hex
    try:
        client, started, app = _common.server_and_push(None, Target(Path(script).resolve(), attr), "run", owner)
    except PackageError as exc:
        raise InvalidError(exc.args[0]) from None
    except ClientError as exc:
        raise ExecutionError(exc.message) from None
    set_context(CallContext(app["id"], app["call_url"], app["control_url"], app["call_token"]))
    done = threading.Event()
    threading.Thread(target=_heartbeats, args=(client, app["id"], owner, done), daemon=True).start()
    try:
        yield stub
    finally:
        done.set()
        set_context(None)
        _stop(client, app["id"], owner, stop_server=started)
