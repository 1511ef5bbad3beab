# Seed: "FastAPI lets you pass data to webhook in other ways too, for instance as form data,
# JSON without using a pydantic Model, and file uploads."
from fastapi import File, Form, UploadFile

import wisp

stub = wisp.Stub()


@stub.webhook(method="POST")
def json_body(data: dict):
    return {"keys": sorted(data)}


@stub.webhook(method="POST")
def form(name: str = Form(...), qty: int = Form(1)):
    return {"name": name, "qty": qty}


@stub.webhook(method="POST")
async def upload(file: UploadFile = File(...)):
    content = await file.read()
    return {"filename": file.filename, "size": len(content)}
