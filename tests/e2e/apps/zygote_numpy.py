"""numpy and pandas at import: OpenBLAS starts a thread pool that stops itself for a fork, so this
forks; pandas starts no thread of its own (issue 16, point 4)."""
import os

import wisp

try:
    import numpy as np
    import pandas as pd
except ImportError:  # not on the machine that deploys; in the image they are
    np = pd = None

stub = wisp.Stub("zygote-numpy")


@stub.webhook(image=wisp.Image.debian_slim().pip_install("numpy", "pandas"))
def matmul(n: int = 200, hold: float = 0.0):
    import time

    ones = np.ones((n, n))
    total = float((ones @ ones).sum())  # large enough for OpenBLAS to use its threads
    frame = pd.DataFrame({"x": np.arange(n)})
    time.sleep(hold)
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
        parent = f.read().replace(b"\0", b" ").decode()
    return {"sum": total, "frame_sum": int(frame["x"].sum()), "pid": os.getpid(), "parent": parent}
