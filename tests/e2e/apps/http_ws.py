"""WebSockets through @stub.asgi and a class web method (issue 5, point 4).

The default image: wisp pins wsproto in every image, so uvicorn can speak WebSocket."""
import os

import wisp

stub = wisp.Stub("http-ws")
image = wisp.Image.debian_slim()


def ws_app(greeting: str):
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute

    async def echo(ws):
        chosen = "chat.v2" if "chat.v2" in ws.scope["subprotocols"] else None
        await ws.accept(subprotocol=chosen)
        await ws.send_text(f"{greeting} {os.getpid()}")
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                print(f"[event] disconnect {message.get('code')}", flush=True)
                return
            text = message.get("text")
            if text == "close-me":
                await ws.close(code=4001, reason="asked to")
                return
            if text is not None:
                await ws.send_text("echo:" + text)
            else:
                await ws.send_bytes(message["bytes"][::-1])

    return Starlette(routes=[WebSocketRoute("/ws", echo)])


@stub.asgi(image=image, container_idle_timeout=2)
def chat():
    return ws_app("hello from")


@stub.cls(image=image)
class Room:
    @wisp.enter()
    def open(self):
        self.greeting = "room entered in"

    @wisp.asgi_app()
    def web(self):
        return ws_app(self.greeting)
