# Seed: "@webhook" - the easiest way to create a webhook out of an existing function.
import wisp

stub = wisp.Stub()


@stub.webhook
def f():
    return "Hello world!"
