"""A script that starts a thread when imported: its containers must not be forked."""
import os
import threading
import time

import wisp

stub = wisp.Stub("zygote-threads")


def _poll() -> None:
    while True:
        time.sleep(1)


threading.Thread(target=_poll, name="metrics-poller", daemon=True).start()


@stub.webhook
def where():
    return {"pid": os.getpid(), "ppid": os.getppid()}
