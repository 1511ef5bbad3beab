"""The app another app's container attacks (tests/faults/test_isolation.py): it must keep serving."""
import wisp

app = wisp.App("iso-victim")
VICTIM_MARKER = "victim-code-7731"  # what a snooping container would find if it could read this file


@app.function()
@wisp.fastapi_endpoint()
def alive() -> dict[str, str]:
    return {"alive": VICTIM_MARKER}
