"""A script whose import takes longer than the serve heartbeat window (10 s), in containers only."""
import os
import time

import wisp

app = wisp.App("slow-import")

if os.environ.get("WISP_FUNCTION"):  # set in the function zygote and containers, not in the CLI's inspector
    time.sleep(12)


@app.function()
@wisp.fastapi_endpoint()
def hello() -> str:
    return "still here"
