"""Issue 16: the functions of one app version share one function zygote."""
import os

import wisp

stub = wisp.Stub("zygote-shared")
IMPORTS = [os.getpid()]  # the pid that imported this script: the zygote, for a forked container


def seen() -> dict[str, object]:
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
        parent = f.read().replace(b"\0", b" ").decode()
    return {"pid": os.getpid(), "ppid": os.getppid(), "parent": parent, "function": os.environ.get("WISP_FUNCTION"),
            "imported_by": IMPORTS}


@stub.webhook
def one():
    return seen()


@stub.webhook
def two():
    return seen()


@stub.webhook
def three():
    return seen()
