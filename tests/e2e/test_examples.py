"""Every seed example, served for real and answered over HTTP (issue 2, points 3 and 4)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from .conftest import EXAMPLES, ServeProcess, Wisp, get, post

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(wisp: Wisp) -> Iterator[dict[str, ServeProcess]]:
    """Serve all examples at once; each `wisp serve` prints its URLs."""
    names = ["quickstart", "hello", "webhook_get", "webhook_post", "webhook_forms", "webhook_complex",
             "asgi_app", "wsgi_app", "backend_call", "spawn_poll", "secret_env"]
    wisp.run("secret", "create", "greeting", "GREETING=Bonjour", "--force")  # as secret_env.py's docstring says
    procs = {name: wisp.serve(EXAMPLES / f"{name}.py") for name in names}
    try:
        for proc in procs.values():
            proc.wait_for("Watching", timeout=300)
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


def test_serve_prints_both_url_forms(wisp: Wisp, served: dict[str, ServeProcess]) -> None:
    out = served["webhook_get"].output
    assert f"http://webhook-get--square-dev.localhost:{wisp.port}/" in out
    assert f"http://127.0.0.1:{wisp.port}/webhook-get--square-dev/" in out


def test_hello_world(wisp: Wisp, served: dict[str, ServeProcess]) -> None:
    r = get(wisp.url("hello--f-dev"))
    assert r.status_code == 200
    assert r.json() == "Hello world!"
    assert r.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("query", "status", "body"),
    [("?x=42", 200, {"square": 1764}), ("?x=-3", 200, {"square": 9})],
)
def test_get_query_parameters(wisp: Wisp, served: dict[str, ServeProcess], query: str, status: int, body: object) -> None:
    r = get(wisp.url("webhook-get--square-dev", "/" + query))
    assert (r.status_code, r.json()) == (status, body)


@pytest.mark.parametrize("query", ["?x=abc", ""])
def test_get_bad_or_missing_query_is_422(wisp: Wisp, served: dict[str, ServeProcess], query: str) -> None:
    r = get(wisp.url("webhook-get--square-dev", "/" + query))
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "x"]


def test_routing_by_host_header(wisp: Wisp, served: dict[str, ServeProcess]) -> None:
    r = get(f"http://127.0.0.1:{wisp.port}/?x=5", headers={"Host": f"webhook-get--square-dev.localhost:{wisp.port}"})
    assert r.json() == {"square": 25}


def test_post_pydantic_body(wisp: Wisp, served: dict[str, ServeProcess]) -> None:
    url = wisp.url("webhook-post--square-dev")
    assert post(url, json={"x": 42}).json() == {"square": 1764}
    empty = post(url, json={})
    assert empty.json() == {"square": 123 ** 2}  # the model's default
    bad = post(url, json={"x": "many"})
    assert bad.status_code == 422


def test_post_with_get_is_405(wisp: Wisp, served: dict[str, ServeProcess]) -> None:
    assert get(wisp.url("webhook-post--square-dev")).status_code == 405


def test_plain_dict_form_and_upload(wisp: Wisp, served: dict[str, ServeProcess]) -> None:
    assert post(wisp.url("webhook-forms--json-body-dev"), json={"b": 1, "a": 2}).json() == {"keys": ["a", "b"]}
    form = post(wisp.url("webhook-forms--form-dev"), data={"name": "pear", "qty": "3"})
    assert form.json() == {"name": "pear", "qty": 3}
    upload = post(wisp.url("webhook-forms--upload-dev"), files={"file": ("data.bin", b"x" * 100_000)})
    assert upload.json() == {"filename": "data.bin", "size": 100_000}


def test_complex_example_imports_boto3_from_its_image(wisp: Wisp, served: dict[str, ServeProcess]) -> None:
    r = post(wisp.url("webhook-complex--f-dev"), json={"name": "wisp"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.text.startswith("<html>Hello, wisp! (boto3 ")


def test_asgi_fastapi_app(wisp: Wisp, served: dict[str, ServeProcess]) -> None:
    foo = post(wisp.url("asgi-app--fastapi-app-dev", "/foo"), json={"any": ["json", 1]})
    assert foo.json() == {"any": ["json", 1]}
    bar = get(wisp.url("asgi-app--fastapi-app-dev", "/bar?arg=wisp"))
    assert bar.text == "<h1>Hello Fast wisp!</h1>"
    assert get(wisp.url("asgi-app--fastapi-app-dev", "/bar")).text == "<h1>Hello Fast world!</h1>"
    assert get(wisp.url("asgi-app--fastapi-app-dev", "/nothing-here")).status_code == 404


def test_wsgi_flask_app(wisp: Wisp, served: dict[str, ServeProcess]) -> None:
    home = get(wisp.url("wsgi-app--flask-app-dev", "/"))
    assert (home.status_code, home.text) == (200, "Hello Flask World!")
    foo = post(wisp.url("wsgi-app--flask-app-dev", "/foo"), json={"flask": True})
    assert foo.json() == {"flask": True}


def test_quickstart_both_functions(wisp: Wisp, served: dict[str, ServeProcess]) -> None:
    assert get(wisp.url("quickstart--square-dev", "/?x=3")).json() == {"square": 9}
    assert post(wisp.url("quickstart--echo-dev"), json={"k": "v"}).json() == {"echo": {"k": "v"}}


def test_unknown_label_lists_labels(wisp: Wisp, served: dict[str, ServeProcess]) -> None:
    r = get(wisp.url("no-such-label"))
    assert r.status_code == 404
    assert "webhook-get--square-dev" in r.json()["labels"]


def test_backend_call_example(wisp: Wisp, served: dict[str, ServeProcess]) -> None:
    assert get(wisp.url("backend-call--stats-dev", "/?n=5")).json() == {"total": 30, "squares": [0, 1, 4, 9, 16]}


def test_spawn_poll_example(wisp: Wisp, served: dict[str, ServeProcess]) -> None:
    from .conftest import wait_until

    call_id = post(wisp.url("spawn-poll--submit-dev"), json={"text": "hello", "seconds": 1}).json()["call_id"]
    first = get(wisp.url("spawn-poll--result-dev", f"/?call_id={call_id}"))
    assert (first.status_code, first.json()) == (202, {"status": "pending"})
    done = wait_until(lambda: (r := get(wisp.url("spawn-poll--result-dev", f"/?call_id={call_id}"))).status_code == 200
                      and r, timeout=60, message="the spawned job")
    assert done.json() == {"result": "HELLO"}


def test_secret_env_example(wisp: Wisp, served: dict[str, ServeProcess]) -> None:
    assert get(wisp.url("secret-env--greet-dev", "/?name=Ada")).json() == "Bonjour, Ada!"
