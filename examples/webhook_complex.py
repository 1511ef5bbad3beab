# Seed: "More complex example" - a function in its own image, with a pydantic body and an HTML reply.
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

import wisp

stub = wisp.Stub()


class Item(BaseModel):
    name: str
    qty: int = 42


image = wisp.Image.debian_slim().pip_install("boto3")


@stub.webhook(method="POST", image=image)
def f(item: Item):
    import boto3  # only in the image: this import runs inside the container

    # do things with boto3
    return HTMLResponse(f"<html>Hello, {item.name}! (boto3 {boto3.__version__})</html>")
