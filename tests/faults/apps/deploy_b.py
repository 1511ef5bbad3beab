"""App `fault-b`: deployed while another app's deploy is stuck."""
import wisp

app = wisp.App("fault-b")


@app.function()
@wisp.fastapi_endpoint()
def hello() -> str:
    return "b"
