# Seed: a POST webhook whose JSON body is a pydantic model.
#   curl http://webhook-post--square.localhost:8400/ -X POST -H 'Content-Type: application/json' -d '{"x": 42}'
from pydantic import BaseModel

import wisp

stub = wisp.Stub()


class Item(BaseModel):
    x: int = 123


@stub.webhook(method="POST")
def square(item: Item):
    return {"square": item.x**2}
