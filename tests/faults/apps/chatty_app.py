"""Writes to its log on every request: `say` once, then `lines` more lines."""
import wisp

stub = wisp.Stub("chatty")


@stub.webhook(keep_warm=1)
def talk(say: str = "", lines: int = 0):
    print(f"said {say}", flush=True)
    for i in range(lines):
        print(f"{say} line {i} " + "y" * 200, flush=True)
    return {"said": say}
