"""wisp: autoscaled HTTP endpoints for Python functions, ASGI and WSGI apps, on your own machine."""
from . import exception, functions
from ._app import (
    App,
    Stub,
    asgi_app,
    concurrent,
    enter,
    exit,
    fastapi_endpoint,
    web_endpoint,
    web_server,
    wsgi_app,
)
from ._functions import FunctionCall
from ._image import Image
from ._retries import Retries
from ._secret import Secret

__all__ = [
    "App",
    "FunctionCall",
    "Image",
    "Retries",
    "Secret",
    "Stub",
    "asgi_app",
    "concurrent",
    "enter",
    "exception",
    "exit",
    "fastapi_endpoint",
    "functions",
    "web_endpoint",
    "web_server",
    "wsgi_app",
]
__version__ = "0.1.0"
