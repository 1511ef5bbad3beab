"""`modal deploy`, Modal's own CLI unmodified, onto a wisp server (issue 13, point 2): a Modal-style
app with fastapi_endpoint (GET, POST with a pydantic body, docs), asgi_app, wsgi_app, a named
secret, proxy auth, min_containers and @modal.concurrent, answered over HTTP as on Modal."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .conftest import REPO, Wisp, admin, get, post, wait_until
from .modal_cli import MODAL, client_env, modal, modal_server

pytestmark = pytest.mark.e2e
APP = REPO / "tests" / "e2e" / "apps" / "modal" / "web_app.py"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Wisp, dict[str, str], Path, str]]:
    root = tmp_path_factory.mktemp("modal-deploy")
    wisp, exports = modal_server(root / "home")
    env = client_env(exports, root)
    folder = root / "app"
    folder.mkdir()
    shutil.copy(APP, folder / "web_app.py")
    try:
        wisp.run("secret", "create", "modal-web-secret", "API_TOKEN=tok-123")
        printed = modal(env, "deploy", "web_app.py", cwd=folder)
        yield wisp, env, folder, printed.stdout + printed.stderr
    finally:
        wisp.run("server", "stop", check=False)


def url(wisp: Wisp, function: str, path: str = "/") -> str:
    return wisp.url(f"modal-web--{function}", path)


def test_the_printed_urls_are_wisp_gateway_urls(deployed: tuple[Wisp, dict[str, str], Path, str]) -> None:
    wisp, _, _, printed = deployed
    for function in ("hello", "square", "api", "flask-app"):
        assert f"http://modal-web--{function}.localhost:{wisp.port}/" in printed, printed
    assert "App deployed" in printed


def test_min_containers_keeps_a_warm_container(deployed: tuple[Wisp, dict[str, str], Path, str]) -> None:
    """min_containers=1 on `api`: one container is ready before any request was made to it (this
    test runs before the others that call `api`)."""
    wisp = deployed[0]
    status, text = admin(wisp, "/v1/apps")
    assert status == 200
    api = next(e for a in json.loads(text)["apps"] if a["name"] == "modal-web" for e in a["endpoints"]
               if e["function"] == "api")
    assert api["containers"].get("ready", 0) + api["containers"].get("busy", 0) >= 1, api


def test_fastapi_endpoints_answer_as_on_modal(deployed: tuple[Wisp, dict[str, str], Path, str]) -> None:
    wisp = deployed[0]
    assert get(url(wisp, "hello", "/?name=Ada")).json()["hello"] == "Ada"
    assert post(url(wisp, "square"), json={"x": 7}).json() == {"square": 49}
    assert post(url(wisp, "square"), json={"x": "seven"}).status_code == 422
    assert get(url(wisp, "hello", "/docs")).status_code == 200  # docs=True


def test_asgi_and_wsgi_apps(deployed: tuple[Wisp, dict[str, str], Path, str]) -> None:
    wisp = deployed[0]
    assert get(url(wisp, "api", "/items/3")).json() == {"item": 3}
    assert get(url(wisp, "flask-app")).text == "flask on wisp"


def test_a_web_server_function_is_proxied(deployed: tuple[Wisp, dict[str, str], Path, str]) -> None:
    listing = get(url(deployed[0], "files"))
    assert listing.status_code == 200 and "web_app.py" in listing.text  # http.server lists the app's folder


def test_a_class_runs_enter_before_its_web_method_and_exit_at_stop(
        deployed: tuple[Wisp, dict[str, str], Path, str]) -> None:
    wisp = deployed[0]
    assert get(url(wisp, "model-predict", "/?x=2")).json() == {"y": 84}
    assert "Model.unload ran" not in wisp.run("app", "logs", "modal-web").stdout


def test_a_named_secret_reaches_the_container(deployed: tuple[Wisp, dict[str, str], Path, str]) -> None:
    assert get(url(deployed[0], "secret")).json() == {"token": "tok-123"}


def test_proxy_auth_is_enforced(deployed: tuple[Wisp, dict[str, str], Path, str]) -> None:
    wisp = deployed[0]
    assert get(url(wisp, "private")).status_code == 401
    out = wisp.run("token", "create", "--proxy", "modal-e2e").stdout
    key, secret = re.search(r"^Modal-Key: (\S+)$", out, re.M), re.search(r"^Modal-Secret: (\S+)$", out, re.M)
    assert key and secret, out
    headers = {"Modal-Key": key[1], "Modal-Secret": secret[1]}
    answered = get(url(wisp, "private"), headers=headers)
    assert answered.status_code == 200, (answered.text, headers)


def test_a_redeploy_serves_the_new_code(deployed: tuple[Wisp, dict[str, str], Path, str]) -> None:
    wisp, env, folder, _ = deployed
    script = folder / "web_app.py"
    script.write_text(script.read_text().replace('{"hello": name, "pid": os.getpid()}',
                                                 '{"hello": name, "pid": os.getpid(), "v": 2}'))
    modal(env, "deploy", "web_app.py", cwd=folder)
    assert get(url(wisp, "hello", "/?name=Bo")).json()["v"] == 2
    # the old version's Model container (started by the class test) drained: its exit hook ran
    wait_until(lambda: "Model.unload ran" in wisp.run("app", "logs", "modal-web").stdout, timeout=60,
               message="the replaced Model container's @modal.exit")


def test_an_image_wisp_cannot_build_fails_the_deploy_and_the_old_version_serves(
        deployed: tuple[Wisp, dict[str, str], Path, str], tmp_path: Path) -> None:
    wisp, env, _, _ = deployed
    before = get(url(wisp, "hello", "/?name=Cy")).json()
    broken = tmp_path / "web_app.py"
    broken.write_text(APP.read_text().replace('modal.Image.debian_slim(python_version="3.11")',
                                              'modal.Image.from_registry("nginx:latest")'))
    failed = modal(env, "deploy", "web_app.py", cwd=tmp_path, check=False)
    assert failed.returncode != 0
    assert "FROM nginx:latest" in failed.stdout + failed.stderr and "debian_slim" in failed.stdout + failed.stderr
    assert get(url(wisp, "hello", "/?name=Cy")).json() == before


SERVED = '''
import modal

app = modal.App("modal-served")


@app.function()
@modal.fastapi_endpoint()
def hello():
    return {"version": 1}
'''


def test_modal_serve_serves_reloads_and_stops_at_ctrl_c(deployed: tuple[Wisp, dict[str, str], Path, str],
                                                        tmp_path: Path) -> None:
    wisp, env, _, _ = deployed
    script = tmp_path / "served.py"
    script.write_text(SERVED)
    served = url(wisp, "x").replace("modal-web--x", "modal-served--hello-dev")

    def answer() -> object:
        try:
            response = get(served, timeout=5)
            return response.json() if response.status_code == 200 else None
        except (requests.RequestException, ValueError):
            return None

    # Its own process group, as in a terminal: Ctrl-C goes to the client and to the reload process it
    # may be starting at that moment (multiprocessing waits for that child at exit).
    serving = subprocess.Popen([MODAL, "serve", "served.py"], cwd=tmp_path, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: answer() == {"version": 1}, timeout=120, message="modal serve to serve")
        # The client starts watching the folder only after its first publish: an edit made before
        # its watcher runs is never seen, so the edit is saved again until it is served.
        for _ in range(6):
            script.write_text(SERVED.replace('{"version": 1}', '{"version": 2}'))
            try:
                wait_until(lambda: answer() == {"version": 2}, timeout=10, message="the edit to be served")
                break
            except AssertionError:
                script.write_text(SERVED)
        assert answer() == {"version": 2}
        os.killpg(serving.pid, signal.SIGINT)
        out, _ = serving.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(serving.pid, signal.SIGKILL)
        serving.wait()
    assert serving.returncode == 0, out
    assert "[wisp] serve modal-served version 1" in out, out  # the app's log streams to the terminal
    listed = wisp.run("app", "list").stdout
    assert any(line.split()[:2] == ["modal-served-dev", "stopped"] for line in listed.splitlines()), listed


CALLS = REPO / "tests" / "e2e" / "apps" / "modal" / "calls_app.py"


def test_modal_run_calls_remote_map_spawn_and_from_id(deployed: tuple[Wisp, dict[str, str], Path, str],
                                                      tmp_path: Path) -> None:
    wisp, env, _, _ = deployed
    shutil.copy(CALLS, tmp_path / "calls_app.py")
    out = modal(env, "run", "calls_app.py", cwd=tmp_path).stdout
    printed = [line for line in out.splitlines() if line.split(" ", 1)[0] in ("remote", "map", "spawn", "from_id",
                                                                             "raised", "nested")]
    assert printed == ["remote 49", "map True", "spawn 25", "from_id 25", "raised ValueError('negative: -1')",
                       "nested 285"], out
    listed = wisp.run("app", "list").stdout  # the run's app ended with it
    assert any(line.split()[:2] == ["modal-calls-dev", "stopped"] for line in listed.splitlines()), listed
    one = modal(env, "run", "calls_app.py::shout", "--word", "hello", cwd=tmp_path)  # one function, its arguments
    assert "shout HELLO" in one.stdout + one.stderr, one.stdout + one.stderr


def test_a_deployed_function_is_called_by_name_from_the_modal_sdk(deployed: tuple[Wisp, dict[str, str], Path, str],
                                                                   tmp_path: Path) -> None:
    env = deployed[1]
    script = tmp_path / "calls_app.py"
    script.write_text(CALLS.read_text().replace('"modal-calls"', '"modal-calls-deployed"'))
    modal(env, "deploy", "calls_app.py", cwd=tmp_path)
    caller = tmp_path / "caller.py"
    caller.write_text('import modal\nprint(modal.Function.from_name("modal-calls-deployed", "square").remote(9))\n')
    python = Path(MODAL).parent / "python"
    done = subprocess.run([str(python), str(caller)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "81", done.stdout + done.stderr
    # From inside a container: its own app's function, yes; another app's, no.
    peek = 'import modal\nprint(modal.Function.from_name("modal-calls-deployed", "peek").remote({!r}))\n'
    for app, expected in (("modal-calls-deployed", "4"), ("modal-web", "PermissionDeniedError")):
        caller.write_text(peek.format(app))
        done = subprocess.run([str(python), str(caller)], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == expected, done.stdout + done.stderr
