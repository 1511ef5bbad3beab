"""A forked function, one that opts out of forking, and a line printed at import."""
import os
import signal

import wisp

stub = wisp.Stub("zygote-more")
print(f"importing zygote_more in {os.getpid()}", flush=True)


def family() -> dict[str, object]:
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
        parent = f.read().replace(b"\0", b" ").decode()
    handlers = {name: str(signal.getsignal(getattr(signal, name))) for name in ("SIGPIPE", "SIGCHLD")}
    return {"pid": os.getpid(), "ppid": os.getppid(), "parent": parent, "signals": handlers}


@stub.webhook
def forked():
    return family()


@stub.webhook(fork=False)
def fresh():
    return family()
