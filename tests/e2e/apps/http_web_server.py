"""@wisp.web_server (issue 5, point 5). The tests replace the PORT_* numbers with free ports."""
import os
import subprocess
import sys

import wisp

stub = wisp.Stub("http-web-server")
HERE = os.path.dirname(os.path.abspath(__file__))
PORT_FILES = 18181
PORT_WS = 18182
PORT_NEVER = 18183


@stub.function()
@wisp.web_server(PORT_FILES, startup_timeout=10)
def files():
    """Any server: the standard library's, serving this folder, on the port in $PORT."""
    subprocess.Popen([sys.executable, "-m", "http.server", os.environ["PORT"], "--bind", "127.0.0.1",
                      "--directory", HERE])


@stub.function(image=wisp.Image.debian_slim().pip_install("wsproto"), keep_warm=2)
@wisp.web_server(PORT_WS, startup_timeout=20)
def uvicorn_ws():
    """Two containers at once: each is told its own port in $PORT."""
    subprocess.Popen([sys.executable, "-m", "uvicorn", "http_web_server:server_app", "--app-dir", HERE,
                      "--port", os.environ["PORT"], "--ws", "wsproto", "--log-level", "warning"])


@stub.function()
@wisp.web_server(PORT_NEVER, startup_timeout=1)
def never_listens():
    pass


async def server_app(scope, receive, send):
    """What uvicorn_ws runs: plain HTTP tells its port; /ws echoes."""
    if scope["type"] == "http":
        body = f"port {os.environ.get('PORT')} pid {os.getpid()}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": "echo:" + (message.get("text") or "")})
