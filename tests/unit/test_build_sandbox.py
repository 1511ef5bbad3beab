"""The build sandbox's decisions (issue 15, point 5), as tables: the allowlist from steps and the
server's environment, the proxy's request parsing, the setup script, the argv and environment;
and its egress proxy over real sockets (loopback only)."""
from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest
import uvloop

from wisp._image_steps import PipInstall, PipInstallFromRequirements, RunCommands, Step
from wisp.server import build_sandbox as bs

PYPI = set(bs.PACKAGE_INDEXES)


@pytest.mark.parametrize(("url", "expected"), [
    ("https://pypi.org/simple", ("pypi.org", 443)),
    ("http://127.0.0.1:8080/simple/", ("127.0.0.1", 8080)),
    ("http://Index.Example.COM/simple", ("index.example.com", 80)),
    ("https://user:secret@private.example:8443/simple", ("private.example", 8443)),
    ("http://[::1]:9000/", ("::1", 9000)),
    ("file:///opt/pypi/simple", None),
    ("/opt/wheels", None),
    ("https://bad:port/", None),
    ("", None),
])
def test_endpoint_of_an_index_url(url: str, expected: bs.Endpoint | None) -> None:
    assert bs.endpoint(url) == expected


@pytest.mark.parametrize(("steps", "environ", "pip_configs", "added"), [
    ([], {}, [], set()),
    ([PipInstall(packages=("six",), index_url="https://mirror.example/simple")], {}, [], {("mirror.example", 443)}),
    ([PipInstall(packages=("six",), extra_index_url="http://127.0.0.1:9000/simple")], {}, [], {("127.0.0.1", 9000)}),
    ([PipInstallFromRequirements(content="--index-url https://a.example/simple\n-f http://b.example:81/w\nsix\n"
                                         "--extra-index-url=https://c.example/s # comment\n")],
     {}, [], {("a.example", 443), ("b.example", 81), ("c.example", 443)}),
    ([RunCommands(commands=("curl https://evil.example",))], {}, [], set()),  # commands name no index
    ([], {"UV_INDEX_URL": "http://127.0.0.1:5000/simple", "PIP_EXTRA_INDEX_URL": "https://x.example/s file:///opt/p"},
     [], {("127.0.0.1", 5000), ("x.example", 443)}),
    ([], {"UV_INDEX": "internal=https://internal.example/simple other=http://o.example:81/s"}, [],
     {("internal.example", 443), ("o.example", 81)}),
    ([], {"UV_FIND_LINKS": "/opt/wheels", "PIP_FIND_LINKS": "/opt/wheels"}, [], set()),  # local paths: read in place
    ([], {}, ["[global]\nfind-links = /opt/wheels\nextra-index-url = file:///opt/pypi/simple\n"
              "    https://pip-conf.example/simple\n[install]\nindex-url = http://inst.example/s\n"],
     {("pip-conf.example", 443), ("inst.example", 80)}),
    ([], {}, ["not a config ["], set()),
    ([], {"WISP_BUILD_ALLOWED_HOSTS": "wheels.example, 10.0.0.5:8080"}, [],
     {("wheels.example", None), ("10.0.0.5", 8080)}),
    ([], {"HTTPS_PROXY": "http://corp:3128", "WISP_TOKEN": "x"}, [], set()),  # nothing else of the environment
])
def test_allowed_endpoints(steps: list[Step], environ: dict[str, str], pip_configs: list[str],
                           added: set[bs.Endpoint]) -> None:
    assert bs.allowed_endpoints(steps, environ, pip_configs) == frozenset(PYPI | added)


@pytest.mark.parametrize("value", ["http://", "a.example:99999", "a.example:port"])
def test_a_wrong_allowed_host_says_what_is_expected(value: str) -> None:
    with pytest.raises(ValueError, match="WISP_BUILD_ALLOWED_HOSTS: .* is not a host or host:port"):
        bs.parse_allowed(value)


@pytest.mark.parametrize(("host", "port", "allowed"), [
    ("pypi.org", 443, True),
    ("PyPI.org", 443, True),
    ("pypi.org", 80, False),  # the public index by https only
    ("files.pythonhosted.org", 443, True),
    ("evil.example", 443, False),
    ("wheels.example", 80, True),  # named without a port: 80 and 443
    ("wheels.example", 443, True),
    ("wheels.example", 22, False),
    ("10.0.0.5", 8080, True),
    ("10.0.0.5", 443, False),  # named with a port: that port only
    ("[::1]", 9000, True),
    ("127.0.0.1", 9000, False),  # the control API on loopback is not an index
])
def test_permits(host: str, port: int, allowed: bool) -> None:
    table = frozenset({*bs.PACKAGE_INDEXES, ("wheels.example", None), ("10.0.0.5", 8080), ("::1", 9000)})
    assert bs.permits(table, host, port) is allowed


@pytest.mark.parametrize(("head", "expected"), [
    (b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n", ("pypi.org", 443, None)),
    (b"CONNECT [::1]:8443 HTTP/1.1\r\n\r\n", ("::1", 8443, None)),
    (b"GET http://127.0.0.1:8000/simple/six/?a=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nProxy-Connection: keep-alive\r\n"
     b"Connection: keep-alive\r\nAccept: */*\r\n\r\n",
     ("127.0.0.1", 8000, b"GET /simple/six/?a=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nAccept: */*\r\n"
                         b"Connection: close\r\n\r\n")),
    (b"GET http://idx.example HTTP/1.0\r\n\r\n", ("idx.example", 80, b"GET / HTTP/1.0\r\nConnection: close\r\n\r\n")),
    (b"GET /simple/ HTTP/1.1\r\n\r\n", None),  # origin form: not a proxy request
    (b"GET https://pypi.org/ HTTP/1.1\r\n\r\n", None),  # https goes by CONNECT
    (b"CONNECT pypi.org HTTP/1.1\r\n\r\n", None),
    (b"garbage\r\n\r\n", None),
])
def test_parse_request(head: bytes, expected: tuple[str, int, bytes | None] | None) -> None:
    assert bs.parse_request(head) == expected


SANDBOX = bs.Sandbox(bs.Tools("/usr/bin/unshare", "/usr/bin/setpriv", "/usr/bin/mount", "/usr/sbin/ip"), 4242, 4242,
                     False, Path("/var/lib/wisp"), Path("/var/lib/wisp/build-cache"), "/usr/bin/python3",
                     {"PATH": "/root/bin:/usr/bin", "WISP_TOKEN": "secret", "AWS_SECRET_ACCESS_KEY": "k",
                      "UV_INDEX_URL": "http://idx/simple", "PIP_FIND_LINKS": "/opt/wheels",
                      "SSL_CERT_FILE": "/etc/ssl/c.pem"},
                     (), (("PIP_CONFIG_FILE", Path("/root/.config/pip/pip.conf")),))
MOUNTS = bs.mounts(SANDBOX, Path("/var/lib/wisp/images/abc"), Path("/tmp/wisp-egress-x/proxy.sock"))


def test_the_script_stages_its_sources_before_covering_tmp_and_wisp_home() -> None:
    lines = bs.setup_script(MOUNTS, SANDBOX.tools, SANDBOX.python, bs.privileges(SANDBOX), 4096).splitlines()

    def at(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    assert lines[0] == "set -e" and at("--make-rprivate /") == 1
    for source in ("/var/lib/wisp/images/abc /run/wisp/build", "/var/lib/wisp/build-cache /run/wisp/cache",
                   "/tmp/wisp-egress-x/proxy.sock /run/wisp/egress.sock",
                   "-o ro /root/.config/pip/pip.conf /run/wisp/pip_config_file"):
        assert at(source) < at("wisp-tmp /tmp") < at("wisp-home /var/lib/wisp"), source
    assert at("wisp-home /var/lib/wisp") < at("--move /run/wisp/build /var/lib/wisp/images/abc")
    root_read_only = next(i for i, line in enumerate(lines) if line.endswith("remount,bind,ro /"))
    assert at("-t proc") < root_read_only < at("lo up") < at("exec /usr")
    assert lines[-1] == ("exec /usr/bin/setpriv --reuid=4242 --regid=4242 --clear-groups --inh-caps=-all "
                         "--bounding-set=-all --no-new-privs -- /usr/bin/python3 -I "
                         f"{bs.EGRESS_SCRIPT} 3128 /run/wisp/egress.sock 4096 \"$@\"")
    assert "chown 4242:4242 /tmp/home" in lines


@pytest.mark.parametrize(("needed", "hide", "expected"), [
    (["/usr/lib/wisp/_runtime", "/usr/bin", "/usr"], "/var/lib/wisp", []),  # nothing covered
    # a clone under /tmp (as CI's): its code and its venv's uv, not the pyenv Python
    (["/tmp/ci/project/src/wisp/_runtime", "/tmp/ci/project/.venv/bin", "/root/.pyenv/versions/3.11.7"],
     "/tmp/pytest/home", ["/tmp/ci/project/.venv/bin", "/tmp/ci/project/src/wisp/_runtime"]),
    (["/srv/home/code/wisp/_runtime", "/srv/home/code"], "/srv/home", ["/srv/home/code"]),  # outermost only
    (["/dev/shm/x", "/var/tmp/y"], "/h", ["/dev/shm/x", "/var/tmp/y"]),
])
def test_what_a_build_needs_below_a_cover_is_put_back(needed: list[str], hide: str, expected: list[str]) -> None:
    assert bs.kept([Path(p) for p in needed], Path(hide)) == tuple(Path(p) for p in expected)


def test_kept_folders_are_staged_before_the_covers_and_put_back_read_only_after() -> None:
    keep = (Path("/tmp/ci/project/.venv/bin"),)
    mounts = bs.Mounts(Path("/tmp/h/images/abc"), Path("/tmp/h/build-cache"), Path("/tmp/s.sock"), Path("/tmp/h"),
                       keep=keep)
    lines = bs.setup_script(mounts, SANDBOX.tools, SANDBOX.python, bs.privileges(SANDBOX)).splitlines()

    def at(text: str) -> int:
        return next(i for i, line in enumerate(lines) if line.endswith(text))

    assert at("--bind /tmp/ci/project/.venv/bin /run/wisp/keep/0") < at("wisp-tmp /tmp") < at("wisp-home /tmp/h")
    assert at("wisp-home /tmp/h") < at("--move /run/wisp/keep/0 /tmp/ci/project/.venv/bin") \
        < at("-o remount,bind,ro /tmp/ci/project/.venv/bin")


def test_without_ip_loopback_comes_up_by_ioctl() -> None:
    tools = bs.Tools("/usr/bin/unshare", "/usr/bin/setpriv", "/usr/bin/mount", None)
    script = bs.setup_script(MOUNTS, tools, "/usr/bin/python3", bs.privileges(SANDBOX))
    assert "/usr/bin/python3 -I -c 'import fcntl" in script and "link set lo up" not in script


@pytest.mark.parametrize(("user_ns", "unshare", "setpriv"), [
    (False, ["/usr/bin/unshare", "--mount", "--pid", "--net", "--ipc", "--uts", "--fork", "--kill-child"],
     ["--reuid=4242", "--regid=4242", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]),
    (True, ["/usr/bin/unshare", "--user", "--map-root-user", "--mount", "--pid", "--net", "--ipc", "--uts", "--fork",
            "--kill-child"],
     ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]),
])
def test_argv_root_and_non_root_servers(user_ns: bool, unshare: list[str], setpriv: list[str]) -> None:
    sandbox = bs.Sandbox(**{**SANDBOX.__dict__, "user_ns": user_ns})
    argv = bs.argv(sandbox, MOUNTS, ["uv", "pip", "install", "six"])
    assert argv[: len(unshare) + 3] == [*unshare, "--", "/bin/sh", "-c"]
    assert argv[-5:] == ["wisp-build", "uv", "pip", "install", "six"]
    assert bs.privileges(sandbox) == setpriv
    assert ("chown 0:0 /tmp/home" in argv[len(unshare) + 3]) is user_ns
    assert argv[len(unshare) + 3].endswith(f"/run/wisp/egress.sock {0 if user_ns else 4096} \"$@\"\n")


def test_environment_passes_index_settings_and_nothing_else_of_the_servers() -> None:
    env = bs.environment(SANDBOX, {"VIRTUAL_ENV": "/var/lib/wisp/images/abc"})
    assert env["UV_INDEX_URL"] == "http://idx/simple" and env["PIP_FIND_LINKS"] == "/opt/wheels"
    assert env["SSL_CERT_FILE"] == "/etc/ssl/c.pem" and env["VIRTUAL_ENV"] == "/var/lib/wisp/images/abc"
    assert "WISP_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin" and env["HOME"] == "/tmp/home"
    assert env["HTTPS_PROXY"] == env["http_proxy"] == "http://127.0.0.1:3128" and env["NO_PROXY"] == ""
    assert env["UV_CACHE_DIR"] == "/var/lib/wisp/build-cache" and env["UV_LINK_MODE"] == "copy"
    assert env["PIP_CONFIG_FILE"] == "/run/wisp/pip_config_file"


@pytest.mark.parametrize(("euid", "environ", "expected"), [
    (1000, {"WISP_BUILD_UID": "5"}, 1000),  # a non-root server builds as itself
    (0, {}, 2_099_999_999),  # just below the app uids
    (0, {"WISP_APP_UID_BASE": "300000"}, 299_999),
    (0, {"WISP_BUILD_UID": "64000"}, 64000),
])
def test_build_uid(euid: int, environ: dict[str, str], expected: int) -> None:
    assert bs.build_uid(euid, environ) == expected


@pytest.mark.parametrize("value", ["0", "-3", "builder"])
def test_a_wrong_build_uid_says_why(value: str) -> None:
    with pytest.raises(ValueError, match="WISP_BUILD_UID=.* must be a uid above 0"):
        bs.build_uid(0, {"WISP_BUILD_UID": value})


def test_the_refusal_names_the_host_and_how_to_allow_it() -> None:
    text = bs.refusal("evil.example", 443)
    assert "evil.example:443 refused" in text and "WISP_BUILD_ALLOWED_HOSTS" in text and "index_url=" in text


# -- the proxy, over real sockets ------------------------------------------------------------------
class Listener:
    """A loopback TCP server that answers one HTTP response per connection and counts them."""

    def __init__(self, host: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self.seen: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(65536)
                self.seen.append(data)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nindex")


async def _exchange(path: Path, request: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(request)
    data = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return data


def test_the_proxy_relays_allowed_endpoints_and_refuses_the_rest() -> None:
    allowed_listener, refused_listener = Listener("127.0.0.1"), Listener("127.0.0.2")
    refused: list[tuple[str, int]] = []

    async def main() -> tuple[bytes, bytes, bytes]:
        allowed = frozenset({("127.0.0.1", allowed_listener.port)})
        async with bs.EgressProxy(allowed, lambda host, port: refused.append((host, port))) as proxy:
            plain = await _exchange(proxy.path, f"GET http://127.0.0.1:{allowed_listener.port}/simple/ HTTP/1.1\r\n"
                                                f"Host: x\r\nProxy-Connection: keep-alive\r\n\r\n".encode())
            tunnel = await _exchange(proxy.path, f"CONNECT 127.0.0.1:{allowed_listener.port} HTTP/1.1\r\n\r\n"
                                                 "GET / HTTP/1.1\r\n\r\n".encode())
            no = await _exchange(proxy.path, f"CONNECT 127.0.0.2:{refused_listener.port} HTTP/1.1\r\n\r\n".encode())
        assert not proxy.path.exists()
        return plain, tunnel, no

    plain, tunnel, no = asyncio.run(main())
    assert plain.startswith(b"HTTP/1.1 200 OK") and plain.endswith(b"index")
    assert allowed_listener.seen[0] == b"GET /simple/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert tunnel.startswith(b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK") and tunnel.endswith(b"index")
    assert no.startswith(b"HTTP/1.1 403 Forbidden") and b"127.0.0.2:%d refused" % refused_listener.port in no
    assert refused == [("127.0.0.2", refused_listener.port)]
    assert refused_listener.seen == []


@pytest.mark.parametrize(("modes", "uid_changes", "expected"), [
    ({}, True, "/var/lib/wisp"),
    ({"/root": 0o40700}, True, "/root"),  # WISP_HOME=/root/.wisp: the build uid could not pass through /root
    ({"/root": 0o40700}, False, "/root/.wisp"),  # a non-root server's builds keep its uid
    ({"/srv": 0o40750, "/srv/x": 0o40700}, True, "/srv"),  # the first closed folder on the way
])
def test_hidden_folder(modes: dict[str, int], uid_changes: bool, expected: str) -> None:
    home = Path("/root/.wisp") if "/root" in modes else Path("/srv/x/wisp") if "/srv" in modes else Path("/var/lib/wisp")
    assert bs.hidden_folder(home, uid_changes, modes) == Path(expected)


@pytest.mark.parametrize(("environ", "note"), [
    ({"WISP_BUILD_SANDBOX": "0"}, "image builds are not sandboxed: WISP_BUILD_SANDBOX=0 is set. Unset it"),
    ({"PATH": "/nonexistent"}, "image builds are not sandboxed: unshare, setpriv"),
])
def test_without_a_sandbox_the_server_says_why(tmp_path: Path, environ: dict[str, str], note: str) -> None:
    sandbox, notes = bs.configure(tmp_path, environ, euid=0)
    assert sandbox is None and len(notes) == 1 and notes[0].startswith(note), notes


def test_a_wrong_build_setting_stops_the_server_saying_which(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="WISP_BUILD_UID='x' must be a uid above 0"):
        bs.configure(tmp_path, {"PATH": "/usr/bin:/bin", "WISP_BUILD_UID": "x"}, euid=0)


@pytest.mark.parametrize("loop_factory", ["asyncio", "uvloop"])
def test_the_proxy_stops_piping_quietly_once_the_other_side_is_closed(loop_factory: str) -> None:
    """A client that hung up while its upstream still sent: the pipe ends without an error
    (uvloop raised RuntimeError on the write, which ended up as a traceback in the server's log)."""

    async def run() -> None:
        left, right = socket.socketpair()
        source_reader = asyncio.StreamReader()
        source_reader.feed_data(b"x" * 10_000)
        source_reader.feed_eof()
        _, writer = await asyncio.open_connection(sock=left)
        writer.close()  # the client is gone
        await writer.wait_closed()
        await bs._pipe(source_reader, writer)
        right.close()

    loop = uvloop.new_event_loop() if loop_factory == "uvloop" else asyncio.new_event_loop()
    try:
        loop.run_until_complete(run())
    finally:
        loop.close()
