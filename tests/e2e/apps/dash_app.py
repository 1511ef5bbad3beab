"""The app the dashboard tests watch: a slow endpoint to make containers busy."""
import time

import wisp

app = wisp.App("dash")


@app.function()
@wisp.fastapi_endpoint()
def slow(s: float = 0.0):
    time.sleep(s)
    return {"slept": s}


@app.function()
@wisp.fastapi_endpoint()
def boom():
    raise RuntimeError("dashboard-boom: raised on purpose")
