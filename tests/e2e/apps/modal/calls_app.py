"""A Modal app with a plain function, called with Modal's own client: `modal run calls_app.py`."""
import modal

app = modal.App("modal-calls")


@app.function()
def square(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x * x


@app.function()
def sum_of_squares(n: int) -> int:
    """Calls its app's other function from inside a container (Modal's entrypoint)."""
    return sum(square.map(range(n))) + square.remote(0)


@app.function()
def peek(app_name: str) -> str:
    """Another app's function is out of a container's reach."""
    try:
        return str(modal.Function.from_name(app_name, "square").remote(2))
    except Exception as exc:
        return type(exc).__name__


@app.function()
def shout(word: str):
    """Run alone: `modal run calls_app.py::shout --word hello`; its output streams to the CLI."""
    print(f"shout {word.upper()}")


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
    print("nested", sum_of_squares.remote(10))
