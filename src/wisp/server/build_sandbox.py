"""Image builds, sandboxed (issue 15, point 5).

Every command of a build (uv's installs, `run_commands`) runs:
- as an unprivileged build uid (a root server: `WISP_BUILD_UID`, by default the uid just below the
  app uid range; a non-root server: its own uid, mapped to root of a user namespace only to set up
  the mounts), with `no_new_privs`, no capabilities and no supplementary groups;
- in its own mount, pid, net, ipc and uts namespaces (util-linux `unshare` and `setpriv`);
- seeing WISP_HOME as an empty folder but for the image's build folder and the builds' uv cache
  (the token, state.db, logs and other apps and images are absent), private /tmp, /var/tmp,
  /dev/shm and /run, its own /proc, and the root file system read-only;
- with a network of loopback only. HTTPS_PROXY/HTTP_PROXY name a forwarder on 127.0.0.1
  (`wisp/_runtime/egress.py`) that relays to a Unix socket bound to a file (reachable across
  network namespaces), where the server's `EgressProxy` lets through only package indexes:
  pypi.org, files.pythonhosted.org, the hosts the build's steps and the server's environment name
  as indexes (UV_/PIP_ index variables, the user's pip.conf), and WISP_BUILD_ALLOWED_HOSTS.

The decisions (the allowlist, the script, the argv, the environment) are pure and tested with
tables; `configure` probes the machine once and says what is missing; `EgressProxy` is the I/O.
"""
from __future__ import annotations

import asyncio
import configparser
import contextlib
import itertools
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .._image_steps import PipInstall, PipInstallFromRequirements, Step
from .isolation import DEFAULT_UID_BASE, MINIMAL_PATH, uid_settings, untraversable

PACKAGE_INDEXES = (("pypi.org", 443), ("files.pythonhosted.org", 443))
# Server variables whose URLs are package indexes (whitespace-separated lists; UV_INDEX's entries
# may be `name=url`).
INDEX_VARIABLES = ("UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS",
                   "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS")
PIP_INDEX_KEYS = ("index-url", "extra-index-url", "find-links")
ALLOWED_VARIABLE = "WISP_BUILD_ALLOWED_HOSTS"
# Passed on to builds: how uv and pip find indexes (and log in to them) and trust TLS.
PASSED_PREFIXES = ("UV_", "PIP_")
PASSED_NAMES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "LANG")
PROXY_PORT = 3128  # the forwarder's, on the build's own loopback
# RLIMIT_NPROC of a root server's build uid (every build's processes and threads together; uv's
# own threads count): a fork bomb in `run_commands` stops here. A non-root server's builds share
# its uid, so there it stays as it is.
BUILD_PROCESSES = 4096
RUN = Path("/run/wisp")  # inside the sandbox: what the setup script stages (a private tmpfs /run)
BUILD_HOME = "/tmp/home"  # the build's HOME, on its private /tmp
EGRESS_SCRIPT = Path(__file__).resolve().parent.parent / "_runtime" / "egress.py"
LO_UP = ("import fcntl, socket, struct; s = socket.socket(); "
         "fcntl.ioctl(s, 0x8914, struct.pack('16sH', b'lo', 0x1 | 0x8))")  # SIOCSIFFLAGS IFF_UP|IFF_LOOPBACK

Endpoint = tuple[str, int | None]  # (host, port); port None: 80 and 443


# -- the allowlist (pure) -------------------------------------------------------------------------
def endpoint(url: str) -> Endpoint | None:
    """(host, port) an index URL reaches, or None for a local path or file:// URL."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def _urls(value: str) -> list[str]:
    """URLs of a whitespace-separated list whose entries may be `name=url` (UV_INDEX)."""
    out = []
    for word in value.split():
        name, sep, rest = word.partition("=")
        out.append(rest if sep and "://" in rest and "://" not in name else word)
    return out


def _requirement_urls(content: str) -> list[str]:
    """The index options inside a requirements file (`--index-url URL`, `-i URL`, `--find-links=URL`, ...)."""
    out = []
    for line in content.splitlines():
        words = [part for word in line.split("#")[0].split()
                 for part in (word.split("=", 1) if word.startswith("-") else [word])]
        for option, value in itertools.pairwise(words):
            if option in ("-i", "--index-url", "--extra-index-url", "-f", "--find-links"):
                out.append(value)
    return out


def step_urls(steps: Iterable[Step]) -> list[str]:
    out: list[str] = []
    for step in steps:
        if isinstance(step, (PipInstall, PipInstallFromRequirements)):
            out += [url for url in (step.index_url, step.extra_index_url) if url]
        if isinstance(step, PipInstallFromRequirements):
            out += _requirement_urls(step.content)
    return out


def pip_config_urls(texts: Iterable[str]) -> list[str]:
    """index-url, extra-index-url and find-links of pip.conf files, in every section."""
    out = []
    for text in texts:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(text)
        except configparser.Error:
            continue
        for section in parser.sections():
            out += [url for key in PIP_INDEX_KEYS for url in parser.get(section, key, fallback="").split()]
    return out


def parse_allowed(value: str) -> list[Endpoint]:
    """WISP_BUILD_ALLOWED_HOSTS: `host` (ports 80 and 443) or `host:port`, comma or space separated."""
    out: list[Endpoint] = []
    for word in value.replace(",", " ").split():
        parsed = endpoint(word if "://" in word else f"http://{word}")
        if parsed is None:
            raise ValueError(f"{ALLOWED_VARIABLE}: {word!r} is not a host or host:port (for example "
                             "`pypi.example.com` or `10.0.0.5:8080`).")
        explicit = ":" in word.rsplit("]", 1)[-1]
        out.append((parsed[0], parsed[1] if explicit else None))
    return out


def allowed_endpoints(steps: Iterable[Step], environ: Mapping[str, str], pip_configs: Iterable[str] = ()) -> frozenset[Endpoint]:
    """Where a build may connect: the public index, the indexes its steps and the server name, the
    operator's additions."""
    urls = step_urls(steps) + pip_config_urls(pip_configs)
    for name in INDEX_VARIABLES:
        urls += _urls(environ.get(name, ""))
    found = {parsed for url in urls if (parsed := endpoint(url)) is not None}
    return frozenset({*PACKAGE_INDEXES, *found, *parse_allowed(environ.get(ALLOWED_VARIABLE, ""))})


def permits(allowed: frozenset[Endpoint], host: str, port: int) -> bool:
    host = host.lower().strip("[]")
    return (host, port) in allowed or ((host, None) in allowed and port in (80, 443))


def refusal(host: str, port: int) -> str:
    return (f"build sandbox: connection to {host}:{port} refused: builds may reach only package indexes. If it is "
            f"one, name it in the step (index_url=/extra_index_url=) or add `{host}:{port}` to "
            f"{ALLOWED_VARIABLE} in the server's environment and restart the server.")


# -- the sandbox (pure) ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Tools:
    unshare: str
    setpriv: str
    mount: str
    ip: str | None  # None: loopback is brought up by a Python ioctl


@dataclass(frozen=True)
class Sandbox:
    """How this server sandboxes its builds (from `configure`)."""

    tools: Tools
    uid: int  # who builds run as (outside any user namespace)
    gid: int
    user_ns: bool  # a non-root server: a user namespace maps its uid to root, for the mounts only
    home: Path  # WISP_HOME (resolved)
    cache: Path  # the builds' uv cache, below WISP_HOME, the build uid's
    python: str  # runs the forwarder
    environ: Mapping[str, str] = field(default_factory=dict)  # the server's, from which index settings pass
    pip_configs: tuple[str, ...] = ()  # the contents of the server user's pip.conf files
    config_files: tuple[tuple[str, Path], ...] = ()  # (variable, host file) bound read-only into the build
    hide: Path | None = None  # shown to builds as an empty folder: WISP_HOME, or the closed folder above it


def hidden_folder(home: Path, uid_changes: bool, modes: Mapping[str, int] | None = None) -> Path:
    """What builds see empty: WISP_HOME, or the first folder above it that other users cannot
    enter (a 0700 /root): the build uid could not reach its build folder through it, and nothing
    in it is the build's business."""
    blocked = untraversable(home.parent, modes) if uid_changes else None
    return blocked or home


@dataclass(frozen=True)
class Mounts:
    """What one sandboxed command sees of the machine."""

    build: Path  # the image's folder: the only writable place of WISP_HOME
    cache: Path
    socket: Path  # the server's egress proxy socket (host path)
    hide: Path  # covered by an empty tmpfs (WISP_HOME)
    files: tuple[tuple[str, Path], ...] = ()  # (name in /run/wisp, host file), read-only
    # Folders the build needs that the covers would hide (wisp's own code, uv, the forwarder's
    # Python, when they lie below /tmp or WISP_HOME's folder, as in a clone under /tmp): put back
    # at their own paths, read-only.
    keep: tuple[Path, ...] = ()


COVERED = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))


def kept(needed: Sequence[Path], hide: Path) -> tuple[Path, ...]:
    """Of the folders a build needs, those a cover would hide, outermost only."""
    covered = [p for p in sorted(set(needed)) if any(p == c or c in p.parents for c in (*COVERED, hide))]
    return tuple(p for p in covered if not any(q in p.parents for q in covered))


def setup_script(mounts: Mounts, tools: Tools, python: str, privileges: Sequence[str], nproc: int = 0) -> str:
    """The shell script that runs first in the new namespaces, as (namespace) root: it arranges
    the mounts, brings loopback up, drops to the build uid and runs the forwarder, which runs the
    command ("$@"). Sources are staged on the private /run before /tmp and WISP_HOME are covered,
    since they may lie below either."""
    q = shlex.quote
    m = q(tools.mount)
    lines = [
        "set -e",
        f"{m} --make-rprivate /",
        f"{m} -t tmpfs -o mode=0755,nosuid,nodev wisp-run /run",
        f"mkdir -p {RUN}/build {RUN}/cache",
        f": > {RUN}/egress.sock",
        f"{m} --bind {q(str(mounts.build))} {RUN}/build",
        f"{m} --bind {q(str(mounts.cache))} {RUN}/cache",
        f"{m} --bind {q(str(mounts.socket))} {RUN}/egress.sock",
    ]
    for name, source in mounts.files:
        lines += [f": > {RUN}/{q(name)}", f"{m} --bind -o ro {q(str(source))} {RUN}/{q(name)}"]
    for n, folder in enumerate(mounts.keep):
        lines += [f"mkdir -p {RUN}/keep/{n}", f"{m} --bind {q(str(folder))} {RUN}/keep/{n}"]
    lines += [
        f"{m} -t tmpfs -o mode=1777,nosuid,nodev wisp-tmp /tmp",
        f"if [ -d /var/tmp ]; then {m} -t tmpfs -o mode=1777,nosuid,nodev wisp-tmp /var/tmp; fi",
        f"if [ -d /dev/shm ]; then {m} -t tmpfs -o mode=1777,nosuid,nodev wisp-shm /dev/shm; fi",
        f"mkdir -p {q(str(mounts.hide))}",
        f"{m} -t tmpfs -o mode=0755,nosuid,nodev wisp-home {q(str(mounts.hide))}",
        f"mkdir -p {q(str(mounts.build))} {q(str(mounts.cache))}",
        f"{m} --move {RUN}/build {q(str(mounts.build))}",
        f"{m} --move {RUN}/cache {q(str(mounts.cache))}",
    ]
    for n, folder in enumerate(mounts.keep):
        lines += [f"mkdir -p {q(str(folder))}", f"{m} --move {RUN}/keep/{n} {q(str(folder))}",
                  f"{m} -o remount,bind,ro {q(str(folder))}"]
    lines += [
        f"{m} -t proc -o nosuid,nodev,noexec proc /proc",
        f"{m} -o remount,bind,ro /",
        (f"{q(tools.ip)} link set lo up" if tools.ip else f"{q(python)} -I -c {q(LO_UP)}"),
        f"mkdir -p {BUILD_HOME}",
        f"chown {privileges_owner(privileges)} {BUILD_HOME}",
        "umask 022",
        f"cd {q(str(mounts.build))}",
        f"exec {q(tools.setpriv)} {' '.join(map(q, privileges))} -- {q(python)} -I {q(str(EGRESS_SCRIPT))} "
        f"{PROXY_PORT} {RUN}/egress.sock {nproc} \"$@\"",
    ]
    return "\n".join(lines) + "\n"


def privileges_owner(privileges: Sequence[str]) -> str:
    """uid:gid the build's HOME belongs to (that of `setpriv`'s options; root of a user namespace)."""
    values = dict(p.split("=", 1) for p in privileges if p.startswith(("--reuid=", "--regid=")))
    return f"{values.get('--reuid', '0')}:{values.get('--regid', '0')}"


def privileges(sandbox: Sandbox) -> list[str]:
    """`setpriv` options: the build uid (kept as is in a user namespace), no groups, no capabilities,
    no new privileges."""
    ids = [] if sandbox.user_ns else [f"--reuid={sandbox.uid}", f"--regid={sandbox.gid}", "--clear-groups"]
    return [*ids, "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]


def namespaces(sandbox: Sandbox) -> list[str]:
    user = ["--user", "--map-root-user"] if sandbox.user_ns else []
    return [sandbox.tools.unshare, *user, "--mount", "--pid", "--net", "--ipc", "--uts", "--fork", "--kill-child"]


def argv(sandbox: Sandbox, mounts: Mounts, command: Sequence[str]) -> list[str]:
    script = setup_script(mounts, sandbox.tools, sandbox.python, privileges(sandbox),
                          0 if sandbox.user_ns else BUILD_PROCESSES)
    return [*namespaces(sandbox), "--", "/bin/sh", "-c", script, "wisp-build", *command]


def environment(sandbox: Sandbox, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A build command's environment: the index settings of the server's, the proxy, uv's cache;
    nothing else of the server's (its token, its credentials)."""
    proxy = f"http://127.0.0.1:{PROXY_PORT}"
    env = {k: v for k, v in sandbox.environ.items() if k.startswith(PASSED_PREFIXES) or k in PASSED_NAMES}
    env.update({
        "PATH": MINIMAL_PATH, "HOME": BUILD_HOME, "LANG": sandbox.environ.get("LANG") or "C.UTF-8",
        "UV_CACHE_DIR": str(sandbox.cache),
        # A hard link into the shared cache would let a later build change this image's files.
        "UV_LINK_MODE": "copy",
        "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "https_proxy": proxy, "http_proxy": proxy,
        "NO_PROXY": "", "no_proxy": "",  # an index on the host's loopback goes through the proxy too
        "UV_NO_PROGRESS": "1",
    })
    env.update({variable: f"{RUN}/{variable.lower()}" for variable, _ in sandbox.config_files})
    env.update(extra or {})
    return env


def build_uid(euid: int, environ: Mapping[str, str]) -> int:
    """Who builds run as: a root server's WISP_BUILD_UID, else the uid just below the app range."""
    if euid != 0:
        return euid
    raw = environ.get("WISP_BUILD_UID")
    if raw:
        if not raw.isdigit() or int(raw) == 0:
            raise ValueError(f"WISP_BUILD_UID={raw!r} must be a uid above 0 that no user or app has "
                             f"(default {DEFAULT_UID_BASE - 1}, just below the app uids).")
        return int(raw)
    try:
        base, _ = uid_settings(environ)
    except ValueError:
        base = DEFAULT_UID_BASE
    return base - 1


# -- the machine (I/O) ----------------------------------------------------------------------------
def _user_configs(environ: Mapping[str, str]) -> list[tuple[str, Path]]:
    """The server user's own pip and uv config files (the build uid cannot read its HOME)."""
    home = Path(environ.get("HOME") or Path.home())
    config = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    found = []
    for variable, candidates in (("PIP_CONFIG_FILE", [config / "pip/pip.conf", home / ".pip/pip.conf"]),
                                 ("UV_CONFIG_FILE", [config / "uv/uv.toml"])):
        if variable in environ:
            candidates = [Path(environ[variable])]
        found += [(variable, path) for path in candidates[:1] if path.is_file()]
    return found


def configure(home: Path, environ: Mapping[str, str], euid: int | None = None) -> tuple[Sandbox | None, list[str]]:
    """The server's build sandbox, and a line for each thing missing (builds then run as before,
    and the server says so)."""
    euid = os.geteuid() if euid is None else euid
    if environ.get("WISP_BUILD_SANDBOX", "1") == "0":
        return None, ["image builds are not sandboxed: WISP_BUILD_SANDBOX=0 is set. Unset it to build as an "
                      "unprivileged uid in namespaces of their own, with egress only to package indexes."]
    path = environ.get("PATH", os.defpath)
    found = {name: shutil.which(name, path=path) or shutil.which(name, path="/usr/sbin:/sbin")
             for name in ("unshare", "setpriv", "mount", "ip")}
    lacking = [name for name in ("unshare", "setpriv", "mount") if not found[name]]
    if lacking:
        return None, [f"image builds are not sandboxed: {', '.join(lacking)} not found. Install util-linux "
                      "(and mount) to build in namespaces of their own, as an unprivileged uid."]
    try:
        uid = build_uid(euid, environ)
        parse_allowed(environ.get(ALLOWED_VARIABLE, ""))
    except ValueError as exc:
        raise SystemExit(f"wisp server: {exc}") from None
    tools = Tools(str(found["unshare"]), str(found["setpriv"]), str(found["mount"]), found["ip"])
    configs = _user_configs(environ)
    python = _forwarder_python(euid)
    sandbox = Sandbox(tools, uid, uid if euid == 0 else os.getegid(), euid != 0, home.resolve(),
                      build_cache(home, environ), python, dict(environ),
                      tuple(_read(path) for _, path in configs), tuple(configs),
                      hidden_folder(home.resolve(), euid == 0))
    problem = _trial(sandbox)
    if problem:
        return None, [f"image builds are not sandboxed: the kernel refused their namespaces ({problem}). They run "
                      "as the server's uid with its view of the machine and its network."]
    notes = []
    if euid == 0:
        for needed in (Path(sandbox.python), EGRESS_SCRIPT, Path(_uv())):
            blocked = untraversable(needed)
            if blocked is not None:
                return None, [f"image builds are not sandboxed: the build uid {uid} cannot read {needed} (the folder "
                              f"{blocked} is closed to other users). `chmod o+x {blocked}`, then restart the server."]
    if not tools.ip:
        notes.append("image builds: `ip` (iproute2) not found; loopback is brought up by an ioctl instead.")
    return sandbox, notes


def build_cache(home: Path, environ: Mapping[str, str]) -> Path:
    """uv's cache for sandboxed builds: `WISP_BUILD_CACHE`, else `WISP_HOME/build-cache`. Several
    servers may share one (uv locks it), as the test suite's do: a fresh WISP_HOME then does not
    fetch every package again."""
    chosen = environ.get("WISP_BUILD_CACHE")
    return Path(chosen).resolve() if chosen else home.resolve() / "build-cache"


def _forwarder_python(euid: int) -> str:
    """An interpreter the build uid may run (the forwarder needs only the standard library)."""
    candidates = [sys.executable, shutil.which("python3") or "", "/usr/bin/python3"]
    resolved = [os.path.realpath(c) for c in candidates if c and os.access(c, os.X_OK)]
    if euid != 0:
        return resolved[0]
    return next((c for c in resolved if untraversable(Path(c)) is None), resolved[0])


def _uv() -> str:
    from uv import find_uv_bin

    return str(find_uv_bin())


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return ""


def _trial(sandbox: Sandbox) -> str | None:
    """Why the kernel refuses the build's namespaces, or None."""
    try:
        done = subprocess.run([*namespaces(sandbox), "--", "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


def prepare(sandbox: Sandbox, build: Path) -> None:
    """The build's folder and the uv cache belong to the build uid."""
    sandbox.cache.mkdir(parents=True, exist_ok=True)
    build.mkdir(exist_ok=True)
    for folder in (sandbox.cache, build):
        os.chown(folder, sandbox.uid if not sandbox.user_ns else -1, sandbox.gid if not sandbox.user_ns else -1)
        os.chmod(folder, 0o755 if folder == build else 0o700)


# -- the egress proxy (I/O) -----------------------------------------------------------------------
class EgressProxy:
    """An HTTP proxy on a Unix socket, for one build: CONNECT (https) and absolute-form requests
    (http) to allowed endpoints pass; others get a 403 and `on_refused`."""

    def __init__(self, allowed: frozenset[Endpoint], on_refused: Callable[[str, int], None]) -> None:
        self.allowed = allowed
        self.on_refused = on_refused
        self.folder = Path(tempfile.mkdtemp(prefix="wisp-egress-"))  # the server's (0700): only bound into builds
        self.path = self.folder / "proxy.sock"
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> EgressProxy:
        self._server = await asyncio.start_unix_server(self._handle, str(self.path), limit=1 << 16)
        os.chmod(self.path, 0o666)  # the build uid connects; the folder keeps everyone else out
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):  # the build's processes are gone: so are their connections
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            await self._forward(head, reader, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # the build ended: end quietly (Python 3.11's stream server logs a cancelled handler)
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _forward(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = parse_request(head)
        if request is None:
            writer.write(_response(400, "build sandbox: the proxy takes CONNECT host:port or an http:// URL.\n"))
            return
        host, port, first = request
        if not permits(self.allowed, host, port):
            self.on_refused(host, port)
            writer.write(_response(403, refusal(host, port) + "\n"))
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
        except (OSError, TimeoutError) as exc:
            writer.write(_response(502, f"build sandbox: cannot reach {host}:{port}: {exc}\n"))
            return
        if first is None:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            up_writer.write(first)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


def parse_request(head: bytes) -> tuple[str, int, bytes | None] | None:
    """(host, port, what to send upstream) of a proxy request head: None to send for CONNECT
    (the client speaks TLS next), else the request in origin form with `Connection: close`, so one
    proxied connection carries one request to one host."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if method == "CONNECT":
        host, sep, port = target.rpartition(":")
        if not sep or not port.isdigit() or not host:
            return None
        return host.strip("[]").lower(), int(port), None
    parsed = endpoint(target)
    if parsed is None or not target.startswith("http://") or parsed[1] is None:
        return None
    split = urlsplit(target)
    path = (split.path or "/") + (f"?{split.query}" if split.query else "")
    dropped = ("connection", "proxy-connection", "keep-alive", "proxy-authorization")
    headers = [h for h in lines[1:] if h and h.split(":", 1)[0].strip().lower() not in dropped]
    out = "\r\n".join([f"{method} {path} {version}", *headers, "Connection: close", "", ""])
    return parsed[0], parsed[1], out.encode("latin-1")


def _response(status: int, text: str) -> bytes:
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
    body = text.encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until the reader's end, or until the writer's side is gone: then quietly (uvloop raises
    RuntimeError on a write to a closed transport, where asyncio's own loop only logs)."""
    with contextlib.suppress(ConnectionError, OSError, RuntimeError):
        while (data := await reader.read(1 << 16)) and not writer.is_closing():
            writer.write(data)
            await writer.drain()
        if not writer.is_closing() and writer.can_write_eof():
            writer.write_eof()


def mounts(sandbox: Sandbox, build: Path, socket: Path) -> Mounts:
    hide = sandbox.hide or sandbox.home
    python = Path(sandbox.python)
    needed = [EGRESS_SCRIPT.parent, Path(_uv()).resolve().parent, python.parent.parent]
    return Mounts(build.resolve(), sandbox.cache, socket, hide,
                  tuple((variable.lower(), path) for variable, path in sandbox.config_files), kept(needed, hide))
