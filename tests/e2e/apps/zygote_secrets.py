"""Issue 16: functions with different secrets each see only their own, at import and at request."""
import os

import wisp

stub = wisp.Stub("zygote-secrets")
NAMES = ("ALPHA_TOKEN", "BETA_TOKEN")
AT_IMPORT = {name: os.environ.get(name) for name in NAMES}  # what the zygote (or container) imported with


def seen() -> dict[str, object]:
    return {"pid": os.getpid(), "ppid": os.getppid(), "function": os.environ.get("WISP_FUNCTION"),
            "env": {name: os.environ.get(name) for name in NAMES}, "at_import": AT_IMPORT}


@stub.webhook(secrets=[wisp.Secret.from_dict({"ALPHA_TOKEN": "alpha-7781"})])
def alpha():
    return seen()


@stub.webhook(secrets=[wisp.Secret.from_dict({"BETA_TOKEN": "beta-3392"})])
def beta():
    return seen()


@stub.webhook
def plain():
    return seen()


@stub.webhook
def plain_too():
    return seen()
