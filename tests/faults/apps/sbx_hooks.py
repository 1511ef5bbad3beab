"""Enter and exit hooks and a slow request in the sandbox (tests/faults/test_sandbox.py): a
stop must let the request finish (SIGTERM reaches pid 1, uvicorn drains), then run the exit hook.
The hooks print, so the app's log is the evidence (the sandbox shares no file with the test)."""
import time

import wisp

app = wisp.App("sbx-hooks")


@app.cls()
class Slow:
    @wisp.enter()
    def up(self) -> None:
        print("sandboxed enter hook ran", flush=True)

    @wisp.exit()
    def down(self) -> None:
        print("sandboxed exit hook ran", flush=True)

    @wisp.fastapi_endpoint()
    def nap(self, seconds: float = 0.0) -> dict[str, float]:
        time.sleep(seconds)
        return {"slept": seconds}
