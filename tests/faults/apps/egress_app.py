"""Containers that reach out (tests/faults/test_egress.py): each webhook opens a TCP connection
to `host:port`, sends an HTTP request and answers with the status line, or the error's name."""
import errno
import os
import socket
import time

import wisp

app = wisp.App("egress")
# The outside world's listed address, as the test made it (the container's own import: any valid value).
ALLOWED = os.environ.get("EGRESS_ALLOWED", "10.213.0.2:8080")


def probe(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=5) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\nHost: outside\r\n\r\n")
            return conn.recv(128).decode(errors="replace").split("\r\n")[0]
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


@app.function(network=True, container_idle_timeout=2)
@wisp.fastapi_endpoint()
def opened(host: str, port: int, hold: float = 0) -> dict[str, str]:
    time.sleep(hold)  # requests that overlap: one container each
    return {"result": probe(host, port), "network": os.environ.get("WISP_NETWORK", "")}


@app.function(container_idle_timeout=2)
@wisp.fastapi_endpoint()
def closed(host: str, port: int) -> dict[str, str]:
    return {"result": probe(host, port)}


@app.function(network=[ALLOWED], container_idle_timeout=2)
@wisp.fastapi_endpoint()
def listed(host: str, port: int) -> dict[str, str]:
    return {"result": probe(host, port)}


@app.function(network=True, fork=False, container_idle_timeout=2)
@wisp.fastapi_endpoint()
def fresh(host: str, port: int) -> dict[str, str]:
    """Not forked from a function zygote: the image's zygote forks a container that imports the script."""
    return {"result": probe(host, port)}
