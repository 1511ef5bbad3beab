"""What the zygote tests look at inside forked containers."""
import os
import time

import wisp

stub = wisp.Stub("zygote")
SEEN: list[int] = []  # module state: must start empty in every container


@stub.webhook(container_idle_timeout=30)
def inside(hold: float = 0.0):
    SEEN.append(os.getpid())
    time.sleep(hold)
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
        parent = f.read().replace(b"\0", b" ").decode()
    return {"pid": os.getpid(), "ppid": os.getppid(), "parent": parent, "seen": list(SEEN),
            "cwd": os.getcwd(), "app": os.environ.get("WISP_APP"), "function": os.environ.get("WISP_FUNCTION")}


@stub.webhook
def crash():
    os._exit(9)
