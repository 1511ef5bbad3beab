"""`@wisp.web_server`: the decorator's spec, and the agent's port handling and byte proxy."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import wisp
from wisp._runtime import _web_server
from wisp._runtime._lifecycle import StopSignals
from wisp._runtime._pipe import Pipe
from wisp._spec import FunctionSpec, WebSpec


# -- the decorator ---------------------------------------------------------------------------------
def test_web_server_records_its_port_and_startup_timeout() -> None:
    stub = wisp.Stub("s")

    @stub.function(timeout=60)
    @wisp.web_server(8000, startup_timeout=12.5, label="site")
    def site() -> None:
        pass

    spec = stub._functions["site"][1]
    assert spec.web == WebSpec("web_server", label="site", port=8000, startup_timeout=12.5)
    assert spec.timeout == 60
    assert spec.allow_concurrent_inputs == 1000  # one container serves everything by default
    assert FunctionSpec.from_dict(spec.to_dict()) == spec


def test_concurrent_still_decides_the_inputs_of_a_web_server() -> None:
    stub = wisp.Stub("s")

    @stub.function()
    @wisp.concurrent(max_inputs=8)
    @wisp.web_server(8000)
    def site() -> None:
        pass

    assert stub._functions["site"][1].allow_concurrent_inputs == 8


def test_web_server_on_a_class_method() -> None:
    stub = wisp.Stub("s")

    @stub.cls()
    class Site:
        @wisp.web_server(9000)
        def serve(self) -> None:
            pass

    spec = stub._functions["Site.serve"][1]
    assert (spec.web and spec.web.kind, spec.cls, spec.method_name) == ("web_server", "Site", "serve")


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((), {}, "needs the port"),
    ((0,), {}, "from 1 to 65535"),
    ((70000,), {}, "from 1 to 65535"),
    (("8000",), {}, "from 1 to 65535"),
    ((8000,), {"startup_timeout": 0}, "startup_timeout"),
    ((8000,), {"startup_timeout": "5"}, "startup_timeout"),
])
def test_web_server_validates_at_once(args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        wisp.web_server(*args, **kwargs)


def test_bare_web_server_suggests_the_port() -> None:
    with pytest.raises(TypeError, match=r"@wisp.web_server\(8000\)"):
        @wisp.web_server  # type: ignore[arg-type]
        def site() -> None:
            pass


def test_web_server_takes_no_arguments() -> None:
    with pytest.raises(TypeError, match="takes no arguments"):
        @wisp.web_server(8000)
        def site(port: int) -> None:
            pass


# -- ports -------------------------------------------------------------------------------------------
def listening() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_a_free_declared_port_is_used_and_claimed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_web_server.tempfile, "gettempdir", lambda: str(tmp_path))
    port = _web_server.free_port()
    assert _web_server.choose_port(port, "f") == port
    assert (tmp_path / "wisp-ports" / f"{port}.lock").exists()


def test_a_port_in_use_is_replaced_and_said(capsys: pytest.CaptureFixture[str]) -> None:
    with listening() as taken:
        port = taken.getsockname()[1]
        assert not _web_server.port_is_free(port)
        chosen = _web_server.choose_port(port, "site")
    assert chosen != port
    err = capsys.readouterr().err
    assert f"port {port} is in use" in err and f"PORT={chosen}" in err


def test_a_claimed_port_is_not_claimed_twice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Another process holds the lock: flock is per open file, so a second open in this process
    # stands for another container.
    import fcntl
    import os

    monkeypatch.setattr(_web_server.tempfile, "gettempdir", lambda: str(tmp_path))
    port = _web_server.free_port()
    (tmp_path / "wisp-ports").mkdir()
    fd = os.open(tmp_path / "wisp-ports" / f"{port}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert not _web_server.claim(port)
        assert _web_server.choose_port(port, "f") != port
    finally:
        os.close(fd)


def test_waiting_for_a_port_that_never_opens_names_it() -> None:
    starter = _web_server.Starter(lambda: None)
    starter.start()
    port = _web_server.free_port()
    started = time.monotonic()
    with pytest.raises(_web_server.StartupFailed, match=rf"port {port} within startup_timeout=0.3 s"):
        _web_server.wait_for_port(port, 0.3, starter, "site", StopSignals())
    assert time.monotonic() - started < 2


def test_a_function_that_raises_fails_the_start_at_once() -> None:
    def broken() -> None:
        raise RuntimeError("no config")

    starter = _web_server.Starter(broken)
    starter.start()
    with pytest.raises(_web_server.StartupFailed, match="raised RuntimeError: no config"):
        _web_server.wait_for_port(_web_server.free_port(), 5, starter, "site", StopSignals())


def test_a_function_that_serves_forever_itself_is_fine() -> None:
    ready = threading.Event()

    def serve_forever() -> None:
        with listening() as s:
            ports.append(s.getsockname()[1])
            ready.set()
            while True:
                conn, _ = s.accept()
                conn.close()

    ports: list[int] = []
    starter = _web_server.Starter(serve_forever)
    starter.start()
    ready.wait(5)
    assert _web_server.wait_for_port(ports[0], 5, starter, "site", StopSignals()) == "127.0.0.1"


# -- the byte proxy ------------------------------------------------------------------------------------
def test_the_proxy_pipes_bytes_both_ways_with_half_close(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        async def upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read()  # until the client's half-close
            writer.write(data.upper())
            await writer.drain()
            writer.close()

        backend = await asyncio.start_server(upper, "127.0.0.1", 0)
        port = backend.sockets[0].getsockname()[1]
        path = str(tmp_path / "agent.sock")
        proxying = asyncio.ensure_future(_web_server.proxy(path, "127.0.0.1", port, "READY"))
        while not Path(path).exists():
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_unix_connection(path)
        payload = b"abc" * 300_000
        writer.write(payload)
        writer.write_eof()
        assert await reader.read() == payload.upper()
        writer.close()
        import os
        import signal

        os.kill(os.getpid(), signal.SIGTERM)  # the proxy's own handler stops it
        await asyncio.wait_for(proxying, 5)
        backend.close()

    with StopSignals() as stop:
        asyncio.run(main())
        assert not stop.received  # the proxy handled SIGTERM while it ran
    assert "READY" in capsys.readouterr().out


def test_a_pipe_holds_early_bytes_until_linked() -> None:
    class Transport:
        def __init__(self) -> None:
            self.written: list[bytes] = []
            self.reading = True

        def write(self, data: bytes) -> None:
            self.written.append(data)

        def is_closing(self) -> bool:
            return False

        def pause_reading(self) -> None:
            self.reading = False

        def resume_reading(self) -> None:
            self.reading = True

    a, b = Pipe(), Pipe()
    ta, tb = Transport(), Transport()
    a.connection_made(ta)  # type: ignore[arg-type]
    a.data_received(b"early")
    assert not ta.reading  # one read ahead at most
    b.connection_made(tb)  # type: ignore[arg-type]
    a.link(b)
    assert tb.written == [b"early"] and ta.reading
    b.pause_writing()  # b's buffer is full: a stops reading
    assert not ta.reading
    b.resume_writing()
    assert ta.reading
