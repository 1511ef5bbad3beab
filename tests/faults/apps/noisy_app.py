"""Prints a lot when imported (50 MB, in 100-byte lines), and answers after."""
import os
import sys

import wisp

stub = wisp.Stub("noisy")

if os.environ.get("WISP_FUNCTION"):  # in a container or a zygote, not in the CLI's inspect
    line = "x" * 99 + "\n"
    for _ in range(50 * 10_000):  # 50 MB
        sys.stdout.write(line)
    sys.stdout.write("noise done\n")
    sys.stdout.flush()


@stub.webhook
def hello(say: str = ""):
    print(f"said {say}", flush=True)
    return {"ok": True}
