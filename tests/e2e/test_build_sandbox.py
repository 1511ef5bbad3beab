"""Image builds are sandboxed (issue 15, point 5), run as a hostile image would: a real server
builds from a package index on loopback (the only index it names, so nothing reaches the
internet); a build command looks for the server's token, connects to a host that is no index
through the proxy and without it, and a build that needs such a host fails saying which and how
to allow it."""
from __future__ import annotations

import asyncio
import dataclasses
import http.server
import json
import os
import re
import shlex
import shutil
import socket
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from wisp.server import build_sandbox
from wisp.server.images import RUNTIME_PACKAGES

from .conftest import Wisp, get, start_wisp

pytestmark = pytest.mark.e2e


def _wheel(folder: Path, name: str, version: str, tag: str, files: dict[str, bytes]) -> None:
    """A wheel file: `files` plus a RECORD (no hashes: an index on loopback, made by the test)."""
    stem = f"{re.sub(r'[-_.]+', '_', name)}-{version}"
    record = f"{stem}.dist-info/RECORD"
    with zipfile.ZipFile(folder / f"{stem}-{tag}.whl", "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
        wheel.writestr(record, "".join(f"{path},,\n" for path in [*files, record]))


def _repack(dist: metadata.Distribution, folder: Path) -> None:
    """An installed distribution (of this interpreter, the server's) made a wheel again."""
    tag = next(line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
               if line.startswith("Tag:"))
    skipped = ("INSTALLER", "REQUESTED", "RECORD", "direct_url.json")
    files = {}
    for entry in dist.files or []:
        path = str(entry)
        if path.startswith("..") or "__pycache__" in path or path.rsplit("/", 1)[-1] in skipped:
            continue
        located = Path(str(dist.locate_file(entry)))
        if located.is_file():
            files[path] = located.read_bytes()
    _wheel(folder, dist.metadata["Name"], dist.version, tag, files)


def _closure(names: tuple[str, ...]) -> dict[str, metadata.Distribution]:
    """The installed distributions the agent's packages need (markers of this interpreter)."""
    found: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found[name] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


class Index:
    """A simple package index on 127.0.0.1: the agent's packages (from this interpreter) and
    `wisptiny`, a wheel made here."""

    def __init__(self, root: Path) -> None:
        files = root / "files"
        files.mkdir(parents=True)
        seeds = ("pip", "setuptools", "wheel")  # what `uv venv --seed` installs (images with run_commands)
        dists = _closure((*RUNTIME_PACKAGES, *seeds))
        for dist in dists.values():
            _repack(dist, files)
        for name in set(seeds) - set(dists):  # not installed here: a stand-in, which the probe never uses
            _wheel(files, name, "0.0.1", "py3-none-any", {
                f"{name}-0.0.1.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n".encode(),
                f"{name}-0.0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            })
        _wheel(files, "wisptiny", "0.1", "py3-none-any", {
            "wisptiny/__init__.py": b"VALUE = 'from the loopback index'\n",
            "wisptiny-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: wisptiny\nVersion: 0.1\n",
            "wisptiny-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: wisp-tests\nRoot-Is-Purelib: true\n"
                                            b"Tag: py3-none-any\n",
        })
        for wheel in files.iterdir():
            project = root / "simple" / re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
            project.mkdir(parents=True, exist_ok=True)
            with (project / "index.html").open("a") as page:
                page.write(f'<a href="../../files/{wheel.name}">{wheel.name}</a>\n')

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]  # the base's signature

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Listener:
    """A host that is no package index, on 127.0.0.2: it records every connection it gets."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.2", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


PROBE = """
import json, os, resource, socket, urllib.error, urllib.request
home = os.path.dirname(os.path.dirname(os.environ["VIRTUAL_ENV"]))
def raw(host, port):
    try:
        socket.create_connection((host, port), timeout=10).close()
        return "connected"
    except OSError as exc:
        return type(exc).__name__
try:
    urllib.request.urlopen("http://127.0.0.2:PORT/", timeout=30)
    proxied = "passed"
except urllib.error.HTTPError as exc:
    proxied = [exc.code, exc.read().decode()]
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
out = {
    "uid": os.getuid(), "home": sorted(os.listdir(home)), "token": os.path.exists(os.path.join(home, "token")),
    "no_new_privs": status["NoNewPrivs"].strip(), "capabilities": status["CapEff"].strip(),
    "processes": len([p for p in os.listdir("/proc") if p.isdigit()]),
    "raw_listener": raw("127.0.0.2", PORT), "raw_outside": raw("192.0.2.1", 443), "proxied": proxied,
    "hostname_writable": os.access("/etc/hostname", os.W_OK),
    "nproc": list(resource.getrlimit(resource.RLIMIT_NPROC)),
}
open("probe.json", "w").write(json.dumps(out))
"""

APP = """
import json, sys
from pathlib import Path
import wisp

stub = wisp.Stub("buildbox")
image = wisp.Image.debian_slim().pip_install("wisptiny").run_commands(PROBE_COMMAND)


@stub.webhook(image=image)
def probe():
    import wisptiny
    return {"wisptiny": wisptiny.VALUE, **json.loads(Path(sys.prefix, "probe.json").read_text())}
"""

REFUSED_APP = """
import wisp

stub = wisp.Stub("buildrefused")
image = wisp.Image.debian_slim().run_commands(
    "python -c \\"import urllib.request; urllib.request.urlopen('http://127.0.0.2:PORT/simple/six/')\\"")


@stub.webhook(image=image)
def never():
    return "built"
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Wisp, Listener, Path]]:
    root = tmp_path_factory.mktemp("buildbox")
    index, listener = Index(root / "index"), Listener()
    # The loopback index is the only one named (UV_INDEX_URL): nothing of the build reaches the internet.
    # Its own uv cache (WISP_HOME/build-cache), not the suite's shared one: the probe lists WISP_HOME.
    wisp = start_wisp(root / "home", {"UV_INDEX_URL": index.url, "PIP_INDEX_URL": index.url, "WISP_BUILD_CACHE": ""})
    try:
        yield wisp, listener, root
    finally:
        wisp.run("server", "stop", check=False)
        index.server.shutdown()
        index.server.server_close()
        listener.sock.close()


def test_a_build_installs_from_an_allowed_index_and_sees_nothing_of_the_server(
        setup: tuple[Wisp, Listener, Path]) -> None:
    wisp, listener, root = setup
    probe = PROBE.replace("PORT", str(listener.port))
    (root / "buildbox.py").write_text(APP.replace("PROBE_COMMAND", repr(f"python -c {shlex.quote(probe)}")))
    out = wisp.run("deploy", str(root / "buildbox.py")).stdout
    assert f"build sandbox: connection to 127.0.0.2:{listener.port} refused" in out, out  # said as it happened

    seen = get(wisp.url("buildbox--probe")).json()
    assert seen["wisptiny"] == "from the loopback index"
    assert seen["uid"] not in (0, -1) and seen["no_new_privs"] == "1" and int(seen["capabilities"], 16) == 0
    assert seen["home"] == ["build-cache", "images"] and seen["token"] is False  # no token, state, logs, apps
    assert seen["processes"] < 10  # its own pid namespace: the server's processes are not there
    assert seen["raw_listener"] == "ConnectionRefusedError"  # loopback is the build's own
    assert seen["raw_outside"] == "OSError"  # no route out: network unreachable
    status, text = seen["proxied"]
    assert status == 403 and f"127.0.0.2:{listener.port} refused" in text and "WISP_BUILD_ALLOWED_HOSTS" in text
    assert seen["hostname_writable"] is False
    assert seen["nproc"] == [4096, 4096]  # a fork bomb stops at the build uid's process limit
    assert listener.connections == 0


def test_a_build_that_needs_a_host_that_is_no_index_fails_naming_it(setup: tuple[Wisp, Listener, Path]) -> None:
    wisp, listener, root = setup
    (root / "buildrefused.py").write_text(REFUSED_APP.replace("PORT", str(listener.port)))
    done = wisp.run("deploy", str(root / "buildrefused.py"), check=False)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "Image build step `run_commands: python -c " in out and "failed (exit 1)" in out, out
    assert "HTTP Error 403" in out, out
    assert (f"build sandbox: connection to 127.0.0.2:{listener.port} refused: builds may reach only package "
            f"indexes. If it is one, name it in the step (index_url=/extra_index_url=) or add "
            f"`127.0.0.2:{listener.port}` to WISP_BUILD_ALLOWED_HOSTS") in out, out
    assert listener.connections == 0
    log = (wisp.home / "server.log").read_text()
    assert "Traceback" not in log and "not sandboxed" not in log, log  # the proxy ended its connections quietly


NON_ROOT_PROBE = """
import json, os, urllib.error, urllib.request
home = os.path.dirname(os.path.dirname(os.getcwd()))
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
try:
    urllib.request.urlopen("http://127.0.0.2:PORT/", timeout=30)
    proxied = 0
except urllib.error.HTTPError as exc:
    proxied = exc.code
open("written", "w").write("by the build")
print(json.dumps({"home": sorted(os.listdir(home)), "caps": status["CapEff"].strip(), "proxied": proxied,
                  "no_new_privs": status["NoNewPrivs"].strip(), "etc_writable": os.access("/etc", os.W_OK)}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="plays a non-root server by dropping to uid 65534, which needs root")
def test_a_non_root_servers_builds_get_a_user_namespace() -> None:
    """A server that is not root cannot change uid: its builds keep its own, mapped to root of a
    user namespace only to set up the mounts (played here by a root test as uid 65534, in a
    folder of its own outside pytest's, which are closed to other users)."""
    tmp_path = Path(tempfile.mkdtemp(prefix="wisp-e2e-nonroot-"))
    try:
        _non_root_build(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _non_root_build(tmp_path: Path) -> None:
    nobody, listener = 65534, Listener()
    home = tmp_path / "home"
    (home / "images" / "k").mkdir(parents=True)
    (home / "token").write_text("secret")
    sandbox, notes = build_sandbox.configure(home, {"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert sandbox is not None, notes
    sandbox = dataclasses.replace(sandbox, uid=nobody, gid=nobody, user_ns=True, hide=sandbox.home)
    build_sandbox.prepare(sandbox, home / "images" / "k")
    for folder in (tmp_path, home, home / "images", home / "images" / "k", sandbox.cache):
        os.chown(folder, nobody, nobody)  # a non-root server's home is its own
    os.chmod(tmp_path, 0o755)

    async def run() -> tuple[int, bytes, list[tuple[str, int]]]:
        refused: list[tuple[str, int]] = []
        async with build_sandbox.EgressProxy(frozenset(build_sandbox.PACKAGE_INDEXES),
                                             lambda host, port: refused.append((host, port))) as proxy:
            os.chown(proxy.folder, nobody, nobody)
            mounts = build_sandbox.mounts(sandbox, home / "images" / "k", proxy.path)
            command = [sandbox.python, "-c", NON_ROOT_PROBE.replace("PORT", str(listener.port))]
            proc = await asyncio.create_subprocess_exec(
                "setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups",
                *build_sandbox.argv(sandbox, mounts, command), env=build_sandbox.environment(sandbox),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd="/")
            out, _ = await asyncio.wait_for(proc.communicate(), 120)
            return proc.returncode or 0, out, refused

    code, out, refused = asyncio.run(run())
    if code != 0 and b"Operation not permitted" in out:
        pytest.skip(f"this kernel refuses user namespaces to unprivileged users: {out.decode()}")
    assert code == 0, out.decode()
    seen = json.loads(out.decode().splitlines()[-1])
    assert seen == {"home": ["build-cache", "images"], "caps": "0000000000000000", "proxied": 403,
                    "no_new_privs": "1", "etc_writable": False}
    assert refused == [("127.0.0.2", listener.port)] and listener.connections == 0
    written = home / "images" / "k" / "written"
    assert written.read_text() == "by the build" and written.stat().st_uid == nobody
    listener.sock.close()
