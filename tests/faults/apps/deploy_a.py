"""App `fault-a`, version 1: imports and serves normally."""
import wisp

app = wisp.App("fault-a")


@app.function(startup_timeout=10)
@wisp.fastapi_endpoint()
def hello() -> str:
    return "v1"
