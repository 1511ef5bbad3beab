"""A container that starts a child of its own, answers, and dies: the child must not outlive it."""
import os
import subprocess
import threading

import wisp

stub = wisp.Stub("leaves-child")


@stub.webhook
def once():
    child = subprocess.Popen(["sleep", "300"])
    threading.Timer(0.05, os._exit, (3,)).start()
    return {"pid": os.getpid(), "child": child.pid}
