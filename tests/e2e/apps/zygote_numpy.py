"""numpy at import: OpenBLAS starts a thread pool that stops itself for a fork, so this forks."""
import os

import wisp

try:
    import numpy as np
except ImportError:  # not on the machine that deploys; in the image it is
    np = None

stub = wisp.Stub("zygote-numpy")


@stub.webhook(image=wisp.Image.debian_slim().pip_install("numpy"))
def matmul(n: int = 200, hold: float = 0.0):
    import time

    ones = np.ones((n, n))
    total = float((ones @ ones).sum())
    time.sleep(hold)
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
        parent = f.read().replace(b"\0", b" ").decode()
    return {"sum": total, "pid": os.getpid(), "parent": parent}
