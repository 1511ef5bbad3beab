"""Issue 16: a function whose idle zygote the memory bound releases."""
import os

import wisp

stub = wisp.Stub("zygote-release")


@stub.webhook(scaledown_window=2)
def where():
    return {"pid": os.getpid(), "ppid": os.getppid()}
