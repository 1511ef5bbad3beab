# Seed: "WSGI" - a Flask app, built inside the container from the image's flask.
import wisp

stub = wisp.Stub()
image = wisp.Image.debian_slim().pip_install("flask")


@stub.wsgi(image=image)
def flask_app():
    from flask import Flask, request

    web_app = Flask(__name__)

    @web_app.get("/")
    def home():
        return "Hello Flask World!"

    @web_app.post("/foo")
    def foo():
        return request.json

    return web_app
