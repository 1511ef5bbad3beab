"""Calls the functions of calls_app.py from this process, as a user's script would
(`with app.run():`), and prints what each form gave as one JSON object."""
import asyncio
import json
import os
import sys
import traceback
from pathlib import Path

from calls_app import add, app, boom, count, crash, flaky, slow, square

from wisp.functions import FunctionCall


def outcome(fn, *args, **kwargs):
    try:
        return {"value": fn(*args, **kwargs)}
    except Exception as exc:
        return {"raised": type(exc).__name__, "message": str(exc),
                "text": "".join(traceback.format_exception(exc))}


async def aio_forms() -> dict:
    items = [i async for i in count.remote_gen.aio(3)]
    return {"remote": await square.remote.aio(9), "gen": items, "map": [v async for v in square.map.aio([1, 2])]}


def main() -> None:
    out: dict = {}
    with app.run():
        out["remote"] = square.remote(7)
        out["kwargs"] = add.remote(2, b=40)
        out["local"] = square.local(5)
        out["gen"] = list(count.remote_gen(4))
        out["map"] = list(square.map(range(300)))
        out["starmap"] = list(add.starmap([(1, 2), (3, 4)]))
        out["unordered"] = sorted(square.map(range(20), order_outputs=False))
        out["map_exceptions"] = [type(v).__name__ if isinstance(v, Exception) else v
                                 for v in boom.map(["a", "b"], return_exceptions=True)]
        out["boom"] = outcome(boom.remote, "bad input")
        out["crash"] = outcome(crash.remote)
        out["flaky"] = outcome(flaky.remote, f"flaky-{os.getpid()}")
        out["gen_on_remote"] = outcome(count.remote, 3)
        call = slow.spawn(0.5)
        out["pending"] = outcome(call.get, timeout=0)
        out["spawned"] = FunctionCall.from_id(call.object_id).get(timeout=60)
        cancelled = slow.spawn(30)
        cancelled.cancel()
        out["cancelled"] = outcome(cancelled.get, timeout=10)
        out["missing"] = outcome(FunctionCall.from_id("fc-000000000000000000000000").get, timeout=0)
        out["aio"] = asyncio.run(aio_forms())
    out["outside"] = outcome(square.remote, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
