"""A web endpoint that calls backend functions: `.remote()` for one input, `.map()` for many.

    wisp serve examples/backend_call.py
    curl 'http://127.0.0.1:8400/backend-call--stats-dev/?n=5'   # {"total":30,"squares":[0,1,4,9,16]}

The backend functions have no URL; they run in containers of their own, scaled from their queue.
"""
import wisp

app = wisp.App("backend-call")


@app.function()
def square(x: int) -> int:
    return x * x


@app.function()
def total(values: list[int]) -> int:
    return sum(values)


@app.function()
@wisp.fastapi_endpoint()
def stats(n: int = 10) -> dict:
    squares = list(square.map(range(n)))
    return {"total": total.remote(squares), "squares": squares}
