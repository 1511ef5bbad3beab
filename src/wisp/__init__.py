"""wisp: autoscaled HTTP endpoints for Python functions, ASGI and WSGI apps, on your own machine."""
from ._app import (
    App, Stub, asgi_app, concurrent, enter, exit, fastapi_endpoint, web_endpoint, web_server, wsgi_app,
)
from ._image import Image
from ._secret import Secret

__all__ = [
    "App", "Image", "Secret", "Stub", "asgi_app", "concurrent", "enter", "exit", "fastapi_endpoint", "web_endpoint", "web_server",
    "wsgi_app",
]
__version__ = "0.1.0"
