"""The CLI's HTTP client for the control plane (stdlib only: the CLI needs no event loop)."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._config import ALIVE_LOCK, START_LOCK, ServerInfo, disk_problem, read_server_info, read_token

START_TIMEOUT = 30.0


class ClientError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Client:
    def __init__(self, home: Path, info: ServerInfo, token: str) -> None:
        self.home = home
        self.info = info
        self._token = token

    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 600) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.info.admin_url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self._token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                if resp.headers.get_content_type() == "application/json":
                    return json.loads(raw)
                return raw.decode(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode(errors="replace") or exc.reason
            raise ClientError(exc.code, message) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ClientError(0, f"The wisp server at {self.info.admin_url} did not answer ({exc}). "
                                 "Check `wisp server status`.") from None


    def stream(self, method: str, path: str, body: Any, on_event: Callable[[dict[str, Any]], None], *,
               timeout: float = 600) -> Any:
        """A request answered with NDJSON events (build progress); each goes to on_event as it
        arrives, and the last line, {"result": ...} or {"error": ...}, is returned or raised."""
        req = urllib.request.Request(self.info.admin_url + path, data=json.dumps(body).encode(), method=method)
        req.add_header("Authorization", f"Bearer {self._token}")
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/x-ndjson")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                if resp.headers.get_content_type() == "application/json":
                    return json.loads(resp.read())  # a server that does not stream
                for raw in resp:
                    event = json.loads(raw)
                    if "event" in event:
                        on_event(event)
                    elif "result" in event:
                        return event["result"]
                    else:
                        raise ClientError(int(event.get("status", 500)), event.get("error", str(event)))
        except urllib.error.HTTPError as exc:
            raise _http_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ClientError(0, f"The wisp server at {self.info.admin_url} did not answer ({exc}). "
                                 "Check `wisp server status`.") from None
        raise ClientError(0, "The wisp server ended the answer early; `wisp app logs` or $WISP_HOME/server.log may say why.")


def _http_error(exc: urllib.error.HTTPError) -> ClientError:
    raw = exc.read()
    try:
        message = json.loads(raw)["error"]
    except (ValueError, KeyError, TypeError):
        message = raw.decode(errors="replace") or exc.reason
    return ClientError(exc.code, message)


def cli_token(home: Path) -> str | None:
    """What the CLI shows the server: $WISP_TOKEN (a deploy token, say) when set, else the admin
    token the server wrote to $WISP_HOME/token."""
    return os.environ.get("WISP_TOKEN") or read_token(home)


def connect(home: Path) -> Client | None:
    """A client for the server running on this WISP_HOME, or None if none answers. A server that
    answers but refuses the token raises ClientError (401) with its message: starting another
    would not help."""
    info = read_server_info(home)
    token = cli_token(home)
    if info is None or token is None:
        return None
    client = Client(home, info, token)
    try:
        client.request("GET", "/v1/health", timeout=5)
    except ClientError as exc:
        if exc.status == 401:
            raise
        return None
    return client


def start_server(home: Path, port: int, host: str = "127.0.0.1", grace: float | None = None,
                 store: str | None = None) -> Client:
    """Start the embedded server in the background and wait until it answers.

    grace: its shutdown grace in seconds (`--grace`); None: WISP_SHUTDOWN_GRACE or 30.
    store: its store URL (`--store`); None: WISP_STORE, or $WISP_HOME/state.db. Passed in the
    environment, not argv, so that a password in it is not in the process list."""
    log_path = home / "server.log"
    problem = disk_problem(home)  # the server would say so in server.log, on that same full disk
    if problem is not None:
        raise ClientError(0, problem)
    offset = log_path.stat().st_size if log_path.exists() else 0
    extra = ["--grace", str(grace)] if grace is not None else []
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wisp.server", "--home", str(home), "--port", str(port), "--host", host, *extra],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **({"WISP_STORE": store} if store else {})},
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        client = connect(home)
        if client is not None and client.info.pid == proc.pid:
            return client
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    with log_path.open("rb") as f:
        f.seek(offset)
        output = f.read().decode(errors="replace").strip()
    if proc.poll() is None:
        proc.terminate()
    problem = disk_problem(home)  # the disk filled while it started: its own words may be lost
    if problem is not None and problem not in output:
        output = f"{output}\n{problem}".strip()
    raise ClientError(0, f"The wisp server did not start.\n{output}\n(full log: {log_path})")


def ensure_server(home: Path, port: int, host: str = "127.0.0.1", grace: float | None = None,
                  store: str | None = None) -> tuple[Client, bool]:
    """The running server, starting one if none answers; True when this call started it.

    Race-free for many CLIs at once (a Makefile starting several `serve`s): they take turns
    under START_LOCK, so one starts the server and the others find it. A server that is still
    starting or stopping holds ALIVE_LOCK: wait until it answers, or until it has gone.
    """
    with _locked(home / START_LOCK):
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            client = connect(home)
            if client is not None:
                return client, False
            if not server_alive(home):
                return start_server(home, port, host, grace, store), True
            if time.monotonic() > deadline:
                raise ClientError(0, f"A wisp server on {home} neither answers nor exits (see {home / 'server.log'}). "
                                     "Stop it with `wisp server stop`, or `kill` the process named in server.json.")
            time.sleep(0.05)


def server_alive(home: Path) -> bool:
    """Whether a server process of this home exists, answering or not (it holds ALIVE_LOCK)."""
    try:
        fd = os.open(home / ALIVE_LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


STOP_MARGIN = 20.0  # beyond the server's grace, for its containers' exit hooks
DEFAULT_GRACE = 30.0  # the server's own default (wisp.server.main.DEFAULT_GRACE)


def shutdown(client: Client, *, if_idle: bool = False,
             on_answer: Callable[[dict[str, Any]], None] | None = None) -> bool:
    """Ask the server to stop and wait until its process is gone: it drains its requests for
    up to its grace period (the answer says how long), then stops its containers.

    if_idle: only if no app runs and none is being deployed, decided by the server itself (so a
    `serve` that is just deploying on it is never cut off); False when it declined.
    """
    pid = client.info.pid
    try:
        answer = client.request("POST", "/v1/shutdown" + ("?if_idle=1" if if_idle else ""))
    except ClientError as exc:
        if if_idle and exc.status == 409:
            return False
        raise
    if on_answer is not None:
        on_answer(answer)
    limit = float(answer.get("grace", DEFAULT_GRACE)) + STOP_MARGIN
    if wait_for(lambda: not _alive(pid), limit):
        return True
    print(f"Error: The wisp server (pid {pid}) did not stop within {limit:.0f} s; `kill {pid}` twice forces it "
          "(its containers are killed without their exit hooks).", file=sys.stderr, flush=True)
    return False


def wait_for(done: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.05)
    return False


def _alive(pid: int) -> bool:
    try:  # our own child (`serve` started the server): reap it, or it lingers as a zombie
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        return reaped == 0
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
