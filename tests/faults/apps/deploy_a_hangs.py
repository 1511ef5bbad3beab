"""App `fault-a`, version 2: its import never finishes inside the server (WISP_FUNCTION is set in
zygotes and containers), while the CLI's own import of it works."""
import os
import time

import wisp

app = wisp.App("fault-a")

if os.environ.get("WISP_FUNCTION"):
    while True:  # as a script stuck on a database that only the server's machine cannot reach
        time.sleep(0.5)


@app.function(startup_timeout=10)
@wisp.fastapi_endpoint()
def hello() -> str:
    return "v2"
