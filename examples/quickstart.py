"""The smallest useful wisp app: `wisp serve examples/quickstart.py`, then
curl 'http://127.0.0.1:8400/quickstart--square-dev/?x=42'  ->  {"square":1764}
"""
import wisp

stub = wisp.Stub("quickstart")


@stub.webhook
def square(x: int = 7):
    return {"square": x**2}


@stub.webhook(method="POST")
async def echo(body: dict):
    return {"echo": body}


if __name__ == "__main__":
    stub.serve()  # the same as `wisp serve examples/quickstart.py`
