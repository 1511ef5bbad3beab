"""Calls between functions, written in Modal's style (`import wisp as modal`)."""
import os
import time

import wisp as modal

app = modal.App("calls")


@app.function()
def square(x: int) -> int:
    return x * x


@app.function()
async def add(a: int, b: int = 0) -> int:
    return a + b


@app.function()
def count(n: int):
    for i in range(n):
        yield i
        time.sleep(0.01)


@app.function()
def boom(message: str) -> None:
    raise ValueError(message)


SEEN: set[str] = set()


@app.function(max_containers=1, scaledown_window=300)
def first_time(marker: str) -> bool:
    """Whether `marker` is new to this function's one container, which keeps what it saw."""
    new = marker not in SEEN
    SEEN.add(marker)
    return new


@app.function(retries=modal.Retries(max_retries=2, initial_delay=0.1))
def flaky(marker: str) -> str:
    """Fails on its first run (its container crashes), succeeds on the retry: what it has seen
    lives in another function's container, since a container keeps no file for the next one."""
    if first_time.remote(marker):
        os._exit(3)
    return "recovered"


@app.function()
def crash() -> None:
    os._exit(7)


@app.function()
def slow(seconds: float) -> str:
    time.sleep(seconds)
    return f"slept {seconds}"


@app.function()
@modal.fastapi_endpoint()
def front(x: int) -> dict:
    return {"square": square.remote(x), "sum": add.remote(x, b=1)}


@app.function()
@modal.fastapi_endpoint()
def stream(n: int):
    from fastapi.responses import StreamingResponse

    def lines():
        for i in count.remote_gen(n):
            yield f"gen {i}\n"
        for value in square.map(range(n)):
            yield f"map {value}\n"

    return StreamingResponse(lines(), media_type="text/plain")


@app.function()
@modal.fastapi_endpoint(method="POST")
def start(item: dict) -> dict:
    call = slow.spawn(item["seconds"])
    return {"call_id": call.object_id}


@app.function()
@modal.fastapi_endpoint()
def poll(call_id: str):
    from fastapi.responses import JSONResponse
    from modal_compat import FunctionCall

    try:
        return {"result": FunctionCall.from_id(call_id).get(timeout=0)}
    except TimeoutError:
        return JSONResponse({"pending": True}, status_code=202)


@app.local_entrypoint()
def main(x: int = 3) -> None:
    print("square", square.remote(x))
    print("map", list(square.map(range(x))))
