"""Dying with the parent: Linux's parent-death signal (prctl PR_SET_PDEATHSIG).

Every process wisp starts asks for it (zygotes, containers, fresh processes), so that a server
that dies, kill -9 included, takes what it started with it: the kernel signals each child when
its parent goes, level after level. The signal follows the parent *thread*: the server starts
processes from its event-loop thread and the zygotes are single-threaded, so that thread is the
process. Elsewhere (macOS) this does nothing and the zygotes' once-a-second parent check is all.
"""
from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

PR_SET_PDEATHSIG = 1

_prctl: Callable[..., int] | None
try:  # resolved here, not in a child after fork (a fork of a threaded server must not dlopen)
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def die_with_parent(sig: int, parent: int) -> bool:
    """Have the kernel send `sig` to this process when its parent exits. False when `parent` is
    gone already (it died before we asked, and we were handed to another): the caller exits."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    return os.getppid() == parent


def exit_unless_parent(sig: int, parent: int) -> None:
    """`die_with_parent`, as a `preexec_fn`: the child exits at once if its parent has gone."""
    if not die_with_parent(sig, parent):
        os._exit(1)
