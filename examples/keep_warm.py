# Seed: "Latency and keep_warm" - a warm pool of 2 containers that never expire.
import wisp

stub = wisp.Stub()


@stub.webhook(keep_warm=True)
def f():
    return {"hello": "world"}
