"""A Modal app with a plain function, called with Modal's own client: `modal run calls_app.py`."""
import modal

app = modal.App("modal-calls")


@app.function()
def square(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x * x


@app.local_entrypoint()
def main():
    print("remote", square.remote(7))
    print("map", list(square.map(range(100))) == [x * x for x in range(100)])
    call = square.spawn(5)
    print("spawn", call.get(timeout=60))
    print("from_id", modal.FunctionCall.from_id(call.object_id).get(timeout=60))
    try:
        square.remote(-1)
    except ValueError as exc:
        print("raised", repr(exc))
