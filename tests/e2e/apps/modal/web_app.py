"""A Modal app, written for Modal and deployed with Modal's own CLI (`modal deploy`) to wisp."""
import os

import modal
from pydantic import BaseModel

image = modal.Image.debian_slim(python_version="3.11").pip_install("fastapi[standard]", "flask")
app = modal.App("modal-web", image=image)


class Item(BaseModel):
    x: int


@app.function()
@modal.fastapi_endpoint(docs=True)
def hello(name: str = "world"):
    return {"hello": name, "pid": os.getpid()}


@app.function()
@modal.fastapi_endpoint(method="POST")
def square(item: Item):
    return {"square": item.x**2}


@app.function(secrets=[modal.Secret.from_name("modal-web-secret")])
@modal.fastapi_endpoint()
def secret():
    return {"token": os.environ["API_TOKEN"]}


@app.function()
@modal.fastapi_endpoint(requires_proxy_auth=True)
def private():
    return "only with Modal-Key and Modal-Secret"


@app.function(min_containers=1, scaledown_window=120)
@modal.concurrent(max_inputs=10)
@modal.asgi_app()
def api():
    from fastapi import FastAPI

    web = FastAPI()

    @web.get("/items/{n}")
    def item(n: int):
        return {"item": n}

    return web


@app.function()
@modal.wsgi_app()
def flask_app():
    from flask import Flask

    web = Flask(__name__)

    @web.get("/")
    def index():
        return "flask on wisp"

    return web


@app.cls()
class Model:
    @modal.enter()
    def load(self):
        self.weights = 42  # once per container, before it takes requests

    @modal.fastapi_endpoint()
    def predict(self, x: int = 1):
        return {"y": x * self.weights}

    @modal.exit()
    def unload(self):
        print("Model.unload ran")


@app.function()
@modal.web_server(18953, startup_timeout=30)
def files():
    import subprocess
    import sys

    # wisp tells a web server its port in $PORT when the declared one is taken on this machine
    subprocess.Popen([sys.executable, "-m", "http.server", os.environ.get("PORT", "18953"), "--bind", "127.0.0.1"])
