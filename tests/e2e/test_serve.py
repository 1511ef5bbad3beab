"""`wisp serve`: live reload, broken edits, Ctrl-C and SIGTERM cleanup, heartbeats, stub.serve()."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from .conftest import ServeProcess, Wisp, get, processes_in_group, wait_until

pytestmark = pytest.mark.e2e

SCRIPT = """
import time

import wisp
from helper import greeting

stub = wisp.Stub("{name}")
VERSION = {version}


@stub.webhook
def version(wait: float = 0):
    time.sleep(wait)
    return {{"version": VERSION, "greeting": greeting()}}

if __name__ == "__main__":
    stub.serve()
"""


def write_app(folder: Path, name: str, version: int, greeting: str = "hi") -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "helper.py").write_text(f"def greeting():\n    return {greeting!r}\n")
    script = folder / "app.py"
    script.write_text(SCRIPT.format(name=name, version=version))
    return script


def current(wisp: Wisp, label: str) -> dict[str, object] | None:
    r = get(wisp.url(label))
    return r.json() if r.status_code == 200 else None


def test_edit_updates_without_dropping_in_flight(wisp: Wisp, tmp_path: Path) -> None:
    script = write_app(tmp_path / "src", "reloader", 1)
    label = "reloader--version-dev"
    with wisp.serve(script) as serve:
        serve.wait_for("Watching")
        assert current(wisp, label) == {"version": 1, "greeting": "hi"}
        in_flight: dict[str, requests.Response] = {}
        slow = threading.Thread(target=lambda: in_flight.setdefault("r", get(wisp.url(label, "/?wait=3"))))
        slow.start()
        time.sleep(0.5)  # let the slow request reach the (warm) container before the edit
        write_app(tmp_path / "src", "reloader", 2)
        wait_until(lambda: (current(wisp, label) or {}).get("version") == 2, timeout=30, message="version 2")
        slow.join(30)
        assert in_flight["r"].status_code == 200
        assert in_flight["r"].json()["version"] == 1  # finished on the old container

        (tmp_path / "src" / "helper.py").write_text("def greeting():\n    return 'hello again'\n")
        wait_until(lambda: (current(wisp, label) or {}).get("greeting") == "hello again", timeout=30,
                   message="edit of a file beside the script")


def test_syntax_error_keeps_previous_version(wisp: Wisp, tmp_path: Path) -> None:
    script = write_app(tmp_path / "src", "broken-edit", 1)
    label = "broken-edit--version-dev"
    with wisp.serve(script) as serve:
        serve.wait_for("Watching")
        assert current(wisp, label)["version"] == 1  # type: ignore[index]
        mark = len(serve.lines)
        script.write_text(script.read_text() + "\ndef oops(:\n")
        serve.wait_for("SyntaxError", start=mark, timeout=30)
        serve.wait_for("previous version keeps serving", start=mark, timeout=30)
        assert current(wisp, label)["version"] == 1  # type: ignore[index]
        write_app(tmp_path / "src", "broken-edit", 3)
        wait_until(lambda: (current(wisp, label) or {}).get("version") == 3, timeout=30, message="fixed version")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_removes_app_and_containers(wisp: Wisp, tmp_path: Path, sig: int) -> None:
    name = f"cleanup-{sig}"
    script = write_app(tmp_path / "src", name, 1)
    label = f"{name}--version-dev"
    serve = wisp.serve(script)
    serve.wait_for("Watching")
    assert current(wisp, label)["version"] == 1  # type: ignore[index]
    assert processes_in_group(f"{wisp.home}/apps/{name}-dev/"), "a container should be running"
    assert serve.stop(sig) == 0
    assert "Stopped the app" in serve.output
    assert processes_in_group(f"{wisp.home}/apps/{name}-dev/") == []
    assert get(wisp.url(label)).status_code == 404


def test_killed_serve_is_stopped_by_missing_heartbeats(wisp: Wisp, tmp_path: Path) -> None:
    script = write_app(tmp_path / "src", "orphan", 1)
    label = "orphan--version-dev"
    serve = wisp.serve(script)
    serve.wait_for("Watching")
    assert current(wisp, label)["version"] == 1  # type: ignore[index]
    serve.stop(signal.SIGKILL)
    wait_until(lambda: get(wisp.url(label)).status_code == 404, timeout=40, message="orphaned app stopped")
    wait_until(lambda: not processes_in_group(f"{wisp.home}/apps/orphan-dev/"), timeout=20, message="containers gone")


def test_stub_serve_from_python(wisp: Wisp, tmp_path: Path) -> None:
    script = write_app(tmp_path / "src", "from-python", 7)
    serve = ServeProcess(wisp, [sys.executable, str(script)])
    try:
        serve.wait_for("Watching")
        assert current(wisp, "from-python--version-dev")["version"] == 7  # type: ignore[index]
    finally:
        assert serve.stop() == 0
    assert get(wisp.url("from-python--version-dev")).status_code == 404


def test_serve_of_a_broken_script_fails_clearly(wisp: Wisp, tmp_path: Path) -> None:
    script = tmp_path / "nostub.py"
    script.write_text("import wisp\n")
    proc = wisp.run("serve", str(script), check=False)
    assert proc.returncode == 1
    assert "No wisp.Stub found" in proc.stderr
    missing = wisp.run("serve", str(tmp_path / "missing.py"), check=False)
    assert missing.returncode == 1 and "No such file" in missing.stderr


def test_cli_help_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "wisp.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "serve" in out.stdout and "deploy" in out.stdout


def test_serve_that_started_the_server_stops_it_when_nothing_else_runs(tmp_path: Path) -> None:
    from .conftest import free_port, processes_in_group

    lone = Wisp(tmp_path / "home", free_port())
    (tmp_path / "home").mkdir()
    script = write_app(tmp_path / "src", "lonely", 1)
    serve = lone.serve(script)
    serve.wait_for("Watching")
    assert "Started the wisp server" in serve.output
    assert current(lone, "lonely--version-dev")["version"] == 1  # type: ignore[index]
    assert serve.stop() == 0
    assert "Stopped the wisp server this command started" in serve.output
    assert not processes_in_group(str(tmp_path / "home"))
    assert lone.run("server", "status", check=False).returncode == 1


AFTER_SERVE = '''
import wisp
from wisp.exception import Error

stub = wisp.Stub("{name}")


@stub.webhook(image=wisp.Image.debian_slim(python_version="{python}"))
def hello():
    return "hi"


if __name__ == "__main__":
    try:
        stub.serve()
    except Error as exc:
        print("CAUGHT", type(exc).__name__, str(exc).splitlines()[0], flush=True)
    print("AFTER-SERVE: the script goes on", flush=True)
'''


def test_stub_serve_returns_at_ctrl_c_and_the_script_goes_on(wisp: Wisp, tmp_path: Path) -> None:
    """`stub.serve()` in a script or notebook returns once the app has stopped; it never ends the
    process (it used to sys.exit)."""
    script = tmp_path / "after.py"
    script.write_text(AFTER_SERVE.format(name="after-serve", python=f"{sys.version_info[0]}.{sys.version_info[1]}"))
    serve = ServeProcess(wisp, [sys.executable, str(script)])
    try:
        serve.wait_for("Watching")
        assert get(wisp.url("after-serve--hello-dev")).json() == "hi"
    finally:
        assert serve.stop() == 0
    assert "AFTER-SERVE: the script goes on" in serve.output and "CAUGHT" not in serve.output, serve.output
    assert get(wisp.url("after-serve--hello-dev")).status_code == 404


def test_stub_serve_raises_a_wisp_exception_the_script_can_catch(wisp: Wisp, tmp_path: Path) -> None:
    script = tmp_path / "refused.py"
    script.write_text(AFTER_SERVE.format(name="refused-serve", python="3.99"))  # no such interpreter: refused
    done = subprocess.run([sys.executable, str(script)], env=wisp.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CAUGHT ExecutionError" in done.stdout and "Python 3.99" in done.stdout, done.stdout
    assert "AFTER-SERVE: the script goes on" in done.stdout


def test_the_sdk_never_imports_the_cli() -> None:
    """`import wisp`, a stub's serve/run machinery and the call client load no module of wisp.cli."""
    code = ("import sys, wisp, wisp._session.serve, wisp._session.run, wisp._functions\n"
            "print(sorted(m for m in sys.modules if m == 'wisp.cli' or m.startswith('wisp.cli.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
