# Seed: "Passing arguments to webhooks" - query parameters map to typed arguments.
#   curl 'http://webhook-get--square.localhost:8400/?x=42'  ->  {"square":1764}
import wisp

stub = wisp.Stub()


@stub.webhook
def square(x: int):
    return {"square": x**2}
