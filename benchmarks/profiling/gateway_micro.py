"""The gateway's Python cost per request, no sockets: a real FunctionPool with one ready
container (no process), a ClientConnection and an UpstreamConnection on stub transports."""
import asyncio
import gc
import pathlib
import time

import uvloop

from wisp._image import Image
from wisp._spec import FunctionSpec, WebSpec
from wisp.server.gateway.protocol import ClientConnection, GatewayState
from wisp.server.gateway.upstream import UpstreamConnection, UpstreamPool
from wisp.server.logs import AppLog
from wisp.server.metrics import Metrics
from wisp.server.pool import Container, FunctionPool, State

REQUEST = b"GET /bench--hello/ HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\ndate: Fri, 28 Nov 2025 21:00:00 GMT\r\nserver: uvicorn\r\n"
            b"content-length: 17\r\ncontent-type: application/json\r\n\r\n{\"hello\":\"world\"}")


class Stub(asyncio.Transport):
    def get_extra_info(self, name, default=None): return ("127.0.0.1", 5555) if name == "peername" else default
    def write(self, data): self.last = data
    def is_closing(self): return False
    def pause_reading(self): pass
    def resume_reading(self): pass
    def set_write_buffer_limits(self, high=None, low=None): pass
    def get_write_buffer_size(self): return 0


class Launcher:  # never starts anything: the container below is ready from the start
    def prepare(self): pass


async def main(n=20000):
    spec = FunctionSpec(name="hello", image=Image.debian_slim().spec, web=WebSpec("webhook"),
                        keep_warm=1, allow_concurrent_inputs=1000)
    pool = FunctionPool(spec, Launcher(), AppLog(pathlib.Path("/tmp/gateway_micro.log")), "/tmp",
                        metrics=Metrics(), labels=(("app", "bench"), ("function", "hello")))
    pool._containers.append(Container(id="c1", socket_path="/tmp/c1.sock", state=State.READY))
    upstreams = UpstreamPool()
    upstream = UpstreamConnection(upstreams, "/tmp/c1.sock")
    upstream.connection_made(Stub())
    upstreams.put(upstream)
    client = ClientConnection(GatewayState({"bench--hello": pool}, upstreams, 1 << 30))
    client_transport = Stub()
    client.connection_made(client_transport)

    async def one():
        client.data_received(REQUEST)
        await asyncio.sleep(0)  # where acquire() runs in a task, it runs now
        upstream.data_received(RESPONSE)

    for _ in range(2000):
        await one()
    assert client_transport.last.startswith(b"HTTP/1.1 200 "), client_transport.last
    runs = []
    for _ in range(7):
        gc.collect()
        start = time.process_time()
        for _ in range(n):
            await one()
        runs.append((time.process_time() - start) / n * 1e6)
    runs.sort()
    print(f"{runs[3]:.2f} µs/request (median of 7 x {n}), gen0 collections so far: {gc.get_stats()[0]['collections']}")


asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
asyncio.run(main())
