"""Two functions of one version whose containers' sandboxes differ: `small` has the server's /tmp,
`big` a /tmp of 64 MiB (tests/faults/test_sandbox.py: a container forked ahead with one's sandbox
is never handed the other's request)."""
import os
import time

import wisp

app = wisp.App("sbx-disks")


def _seen() -> dict[str, object]:
    tmp = os.statvfs("/tmp")
    return {"tmp_mb": tmp.f_blocks * tmp.f_frsize // (1 << 20), "net": os.readlink("/proc/self/ns/net")}


@app.function()
@wisp.fastapi_endpoint()
def small() -> dict[str, object]:
    return _seen()


@app.function(ephemeral_disk=64)
@wisp.fastapi_endpoint()
def big(hold: float = 0) -> dict[str, object]:
    time.sleep(hold)  # two at once need two containers
    return _seen()
