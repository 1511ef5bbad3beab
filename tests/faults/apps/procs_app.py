"""Containers of three kinds for the process fault tests: forked, fresh (fork=False), and one
that starts a process of its own (it stays in the container's process group)."""
import os
import subprocess
import time

import wisp

stub = wisp.Stub("procs")
CHILD: list[subprocess.Popen] = []


@stub.webhook(keep_warm=2)
def hello(hold: float = 0.0):
    time.sleep(hold)
    return {"pid": os.getpid()}


@stub.webhook(fork=False, keep_warm=1)
def fresh(hold: float = 0.0):
    time.sleep(hold)
    return {"pid": os.getpid()}


@stub.webhook
def spawner():
    if not CHILD:
        CHILD.append(subprocess.Popen(["sleep", "600"]))
    return {"pid": os.getpid(), "child": CHILD[0].pid}


@stub.webhook
def detacher():
    """Starts a process that leaves the container's group and session but keeps its output."""
    if not CHILD:
        CHILD.append(subprocess.Popen(["sleep", "600"], start_new_session=True))
    return {"pid": os.getpid(), "child": CHILD[0].pid}
