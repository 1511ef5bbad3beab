"""Issue 16: a warm container keeps its function zygote, and so the image's zygote, busy."""
import os

import wisp

stub = wisp.Stub("zygote-keeper")


@stub.webhook(min_containers=1)
def where():
    return {"pid": os.getpid(), "ppid": os.getppid()}
