"""A container's (or function zygote's) first step: join the cgroup slot the server made for it,
and take the batch scheduling class.

The server makes the slot ahead (`wisp.server.runtime.slots`) with the function's memory, pids
and CPU limits, writable by the app's uid; the child writes 0 ("this task") to each file of the
request (cgroup v1: each controller's `tasks`, v2: `cgroup.procs`) before anything else (before
namespaces, the environment or any user code; a container forked ahead entered its sandbox while
parked, in its zygote's slot), so nothing it runs is ever outside its limits.
It is one thread then (just forked), so moving the thread moves the process; in v1 a thread's
move takes no global lock, where a process's waits for an RCU grace period after an idle spell
(5-14 ms measured here, on every cold start). A child that cannot join says why on its output
and exits: it never runs without the limits the server promised.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

JOIN_FAILED = 125  # the exit code of a child that could not join its slot


def batch() -> None:
    """SCHED_BATCH: the process is never woken ahead of the one running (the kernel still shares
    the CPU between them fairly, at its ticks). A container is woken by the server handing it a
    request, and would otherwise preempt the server on the other core, by an IPI, before the
    server had handed out the rest of its batch (docs/profiling.md, "The limits' CPU weight").
    Children inherit it. Any process may take this class; a kernel without it changes nothing."""
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def join(procs: Sequence[str] | None, out_fd: int, opened: Sequence[int] = ()) -> None:
    """Take the batch class (`batch`), then move this (single-threaded) process into its slot: 0
    to each of `procs`, through `opened` (the same files, opened by the server and passed with
    the fork request: a sandboxed zygote's children no longer see /sys/fs/cgroup; the kernel
    checks the opener's rights) where given.
    On failure the reason goes to `out_fd` (the container's output) and the process exits with
    JOIN_FAILED."""
    batch()
    if not procs:
        for fd in opened:
            os.close(fd)
        return
    for index, path in enumerate(procs):
        try:
            fd = opened[index] if index < len(opened) else os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        except OSError as exc:
            message = (f"[wisp] could not join the container's cgroup ({path}: {exc.strerror}); it does not run "
                       "without its limits. Check that the server may manage cgroups (`wisp server start` says "
                       "what it runs without).\n")
            try:
                os.write(out_fd, message.encode())
            finally:
                os._exit(JOIN_FAILED)
