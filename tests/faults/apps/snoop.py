"""A container that tries to reach the server's control plane and another app's files from inside
(issue 11, point 1). Each attempt reports what it got; tests/faults/test_isolation.py judges."""
import json
import os
import socket
import urllib.error
import urllib.request

import wisp

app = wisp.App("iso-snoop")


def _read(path: str) -> str:
    """"read: <first bytes>" when the file could be read, else the error's name."""
    try:
        if os.path.isdir(path):
            return "listed: " + ",".join(sorted(os.listdir(path)))
        with open(path, "rb") as f:
            return "read: " + f.read(200).decode(errors="replace")
    except OSError as exc:
        return type(exc).__name__


def _delete(admin_port: int, app_id: str, token: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{admin_port}/v1/apps/{app_id}", method="DELETE",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _connect_all() -> dict[str, str]:
    """Every wisp Unix socket on the machine (/proc/net/unix lists their paths): the image
    zygote's (root: it would fork a child as any uid), other apps' zygotes' and containers'."""
    found = {}
    with open("/proc/net/unix") as table:
        paths = {line.split()[7] for line in table.readlines()[1:] if len(line.split()) >= 8 and "wisp-" in line}
    for path in sorted(paths):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(2)
        try:
            sock.connect(path)
            found[path] = "connected"
        except OSError as exc:
            found[path] = type(exc).__name__
        finally:
            sock.close()
    return found


@app.function()
@wisp.fastapi_endpoint()
def probe(home: str, other: str, admin_port: int) -> dict[str, object]:
    env_home = os.environ.get("WISP_HOME", "")
    paths = {
        "env_token": os.path.join(env_home, "token") if env_home else "",
        "token": f"{home}/token",
        "server_json": f"{home}/server.json",
        "state_db": f"{home}/state.db",
        "server_log": f"{home}/server.log",
        "home_listing": home,
        "other_code_dir": f"{home}/apps/{other}",
        "other_code": f"{home}/apps/{other}/v1/victim.py",
        "other_log": f"{home}/logs/{other}.log",
        "logs_dir": f"{home}/logs",
    }
    reads = {name: _read(path) if path else "no path" for name, path in paths.items()}
    tokens = {"call_token": os.environ.get("WISP_CALL_TOKEN", ""), "env_wisp_token": os.environ.get("WISP_TOKEN", "")}
    for name in ("env_token", "token"):
        if reads[name].startswith("read: "):
            tokens[name] = reads[name][len("read: "):].strip()
    ports = {admin_port}
    if reads["server_json"].startswith("read: "):
        ports.add(json.loads(reads["server_json"][len("read: "):])["admin_port"])
    deletes = {f"{name}@{port}": _delete(port, other, token) for name, token in tokens.items() if token for port in ports}
    return {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "reads": reads,
            "env": sorted(os.environ), "deletes": deletes, "sockets": _connect_all()}
