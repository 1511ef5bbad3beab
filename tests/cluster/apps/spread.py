"""A web endpoint that says where it runs: its node (WISP_NODE), its process, its version."""
import os
import time

import wisp

VERSION = "v1"
stub = wisp.Stub("spread")


@stub.webhook(cpu=0.5, container_idle_timeout=60)
def where(ms: int = 0):
    time.sleep(ms / 1000)
    return {"node": os.environ.get("WISP_NODE"), "pid": os.getpid(), "version": VERSION}
