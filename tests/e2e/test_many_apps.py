"""Issue 16, point 3: many functions and many apps on one server. A 200-function app deploys and
every route answers with its own function; `wisp app list` lists many apps, running and stopped,
each with its own endpoints; routes of functions scaled to zero still answer."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from .conftest import Wisp, admin

pytestmark = pytest.mark.e2e

WEBHOOK = '''

@stub.webhook(scaledown_window=2)
def f{i}(x: int = 2):
    return {{"app": {app!r}, "f": {i}, "square": x**2}}
'''


def write_app(root: Path, name: str, functions: int) -> Path:
    """The app's script in a folder of its own (a deploy ships the files beside its script)."""
    folder = root / name
    folder.mkdir()
    script = folder / f"{name}.py"
    script.write_text(f"import wisp\n\nstub = wisp.Stub({name!r})\n"
                      + "".join(WEBHOOK.format(i=i, app=name) for i in range(functions)))
    return script


def test_an_app_with_200_functions_deploys_and_every_route_answers_its_own(own_wisp: Wisp, tmp_path: Path) -> None:
    own_wisp.run("deploy", str(write_app(tmp_path, "big", 200)))
    with requests.Session() as session:
        for i in range(200):
            resp = session.get(own_wisp.url(f"big--f{i}", f"/?x={i}"), timeout=120)
            assert resp.status_code == 200, (i, resp.text)
            assert resp.json() == {"app": "big", "f": i, "square": i * i}
    status, body = admin(own_wisp, "/v1/apps")
    assert status == 200
    (app,) = json.loads(body)["apps"]
    assert sorted(ep["label"] for ep in app["endpoints"]) == sorted(f"big--f{i}" for i in range(200))


def test_app_list_lists_many_apps_running_and_stopped_with_their_own_endpoints(own_wisp: Wisp, tmp_path: Path) -> None:
    names = [f"many-{n:02d}" for n in range(30)]
    for name in names:
        own_wisp.run("deploy", str(write_app(tmp_path, name, 2)))
    for name in names[::3]:
        own_wisp.run("app", "stop", name)
    stopped = set(names[::3])
    listed = own_wisp.run("app", "list").stdout.splitlines()
    heads = {line.split()[0]: line.split()[1] for line in listed if not line.startswith(" ")}
    assert heads == {name: "stopped" if name in stopped else "running" for name in names}
    urls = [line.split()[1] for line in listed if line.startswith("  f")]
    assert sorted(urls) == sorted(f"http://{name}--f{i}.localhost:{own_wisp.port}/"
                                  for name in names if name not in stopped for i in range(2))
    running = names[1]
    assert requests.get(own_wisp.url(f"{running}--f1", "/?x=5"), timeout=120).json() == {"app": running, "f": 1, "square": 25}
    assert requests.get(own_wisp.url(f"{names[0]}--f1"), timeout=120).status_code == 404  # a stopped app's route is gone
