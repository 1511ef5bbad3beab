"""Imports on the developer's machine, fails when a container imports it."""
import os

import wisp

stub = wisp.Stub("zygote-broken")
if os.environ.get("WISP_APP"):
    raise RuntimeError("DATABASE_URL is not set on this server")


@stub.webhook
def answer():
    return {"answer": 42}
