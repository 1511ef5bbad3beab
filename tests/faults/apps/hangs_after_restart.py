"""App `fault-restart`: imports normally, until a file named `hang` sits beside the deployed copy
of the script; from then on its import never finishes in the server."""
import os
import time
from pathlib import Path

import wisp

app = wisp.App("fault-restart")

if os.environ.get("WISP_FUNCTION") and (Path(__file__).parent / "hang").exists():
    while True:  # as a database the server cannot reach any more after a restart
        time.sleep(0.5)


@app.function(startup_timeout=5)
@wisp.fastapi_endpoint()
def hello() -> str:
    return "ok"
