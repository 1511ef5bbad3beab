"""A script whose import never finishes, in the CLI's own interpreter too."""
import time

import wisp

app = wisp.App("fault-import-hangs")

while True:
    time.sleep(0.5)


@app.function()
@wisp.fastapi_endpoint()
def hello() -> str:
    return "never"
