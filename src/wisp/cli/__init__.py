"""The `wisp` command: serve, deploy, run, app, image, node, secret, token and server."""
from __future__ import annotations

import argparse
import sys

from .._session import output as _output
from ..client import ClientError
from . import app, dashboard, deploy, image, modal_env, node, run, secret, serve, server, token


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wisp", description="Autoscaled HTTP endpoints for Python functions.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run an ephemeral app that live-reloads until Ctrl-C")
    p.add_argument("script", help="the Python script defining a wisp.Stub (`script.py` or `script.py::stub`)")
    p.add_argument("--port", type=int, help="gateway port if the server must be started (default 8400, $WISP_PORT)")
    p.set_defaults(run=serve.run)

    p = sub.add_parser("deploy", help="create or update a persistent app")
    p.add_argument("script", help="the Python script defining a wisp.Stub")
    p.add_argument("--port", type=int, help="gateway port if the server must be started")
    p.set_defaults(run=deploy.run)

    p = sub.add_parser("run", help="run a local entrypoint (or call a function) with the app running")
    p.add_argument("target", help="`script.py` (its one @stub.local_entrypoint) or `script.py::name`")
    p.add_argument("args", nargs=argparse.REMAINDER, help="--name value for the function's parameters")
    p.set_defaults(run=run.run)

    apps = sub.add_parser("app", help="list, stop and read the logs of apps").add_subparsers(dest="action", required=True, metavar="ACTION")
    apps.add_parser("list", help="apps with their state, URLs and containers").set_defaults(run=app.list_apps)
    p = apps.add_parser("stop", help="stop an app and its containers")
    p.add_argument("name")
    p.set_defaults(run=app.stop)
    p = apps.add_parser("rollback", help="deploy a kept earlier version again (default: the one before)")
    p.add_argument("name")
    p.add_argument("version", nargs="?", type=int, help="the version to go back to (`wisp app list` shows the current)")
    p.set_defaults(run=app.rollback)
    p = apps.add_parser("logs", help="what an app's containers wrote to stdout/stderr")
    p.add_argument("name")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.set_defaults(run=app.logs)

    images = sub.add_parser("image", help="list and prune built images").add_subparsers(dest="action", required=True, metavar="ACTION")
    images.add_parser("list", help="built images: hash, size, last use, packages").set_defaults(run=image.list_images)
    images.add_parser("prune", help="remove images that no running app uses").set_defaults(run=image.prune)

    nodes = sub.add_parser("node", help="the machines containers run on (a Ray cluster's nodes)").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    nodes.add_parser("list", help="nodes: state, address, CPU/memory/GPU and what is reserved, containers").set_defaults(
        run=node.list_nodes)
    p = nodes.add_parser("drain", help="a node takes no new container; its containers finish their requests and stop")
    p.add_argument("name", help="the node's name, as `wisp node list` shows it")
    p.set_defaults(run=node.drain)

    secrets = sub.add_parser("secret", help="create, list and delete named secrets").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = secrets.add_parser("create", help="store KEY=VALUE pairs under a name, for `wisp.Secret.from_name`")
    p.add_argument("name")
    p.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--from-dotenv", metavar="FILE", help="also take the variables of this .env file")
    p.add_argument("--force", action="store_true", help="replace the values of an existing secret")
    p.set_defaults(run=secret.create)
    secrets.add_parser("list", help="secret names, key names and dates (never values)").set_defaults(run=secret.list_secrets)
    p = secrets.add_parser("delete", help="delete a secret")
    p.add_argument("name")
    p.set_defaults(run=secret.delete)

    tokens = sub.add_parser("token", help="proxy tokens for requires_proxy_auth endpoints, deploy tokens for one app").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = tokens.add_parser("create", help="make a proxy token (prints its Modal-Key and Modal-Secret) or a deploy token (prints it), once")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--proxy", metavar="NAME", help="a proxy token of this name, for requires_proxy_auth endpoints")
    kind.add_argument("--deploy", metavar="APP_NAME", help="a deploy token that may only deploy, serve, stop and read the logs of this app (use it as WISP_TOKEN)")
    p.set_defaults(run=token.create)
    tokens.add_parser("list", help="token names, kinds, keys and dates (secrets are not kept)").set_defaults(run=token.list_tokens)
    p = tokens.add_parser("revoke", help="revoke a token: refused from the next request")
    p.add_argument("name", help="the token's name, or a proxy token's key (wk-...)")
    p.set_defaults(run=token.revoke)

    p = sub.add_parser("dashboard", help="print a one-time link to the dashboard (apps, containers, live)")
    p.add_argument("--open", action="store_true", help="also open it in a browser")
    p.add_argument("--port", type=int, help="gateway port if the server must be started")
    p.set_defaults(run=dashboard.run)

    modal = sub.add_parser("modal", help="use Modal's own client (the `modal` CLI) with this server").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = modal.add_parser("env", help='print the exports for `eval "$(wisp modal env)"` (starts the server if needed)')
    p.add_argument("--port", type=int, help="gateway port if the server must be started")
    p.set_defaults(run=modal_env.run)

    servers = sub.add_parser("server", help="manage the background server").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = servers.add_parser("start", help="start the server in the background")
    p.add_argument("--port", type=int, help="gateway port (default 8400, $WISP_PORT)")
    p.add_argument("--host", default="127.0.0.1", help="gateway address (default 127.0.0.1)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a --host other machines reach, over plain HTTP (wisp has no TLS; $WISP_INSECURE=1)")
    p.add_argument("--grace", type=server.grace_seconds, help="seconds in-flight requests and WebSockets get to "
                   "finish when the server stops (default 30, $WISP_SHUTDOWN_GRACE)")
    p.add_argument("--store", help="where apps, versions, secrets and tokens are kept: sqlite:///PATH (default "
                   "$WISP_HOME/state.db) or postgresql://USER:PASSWORD@HOST:PORT/DATABASE, which servers may share "
                   "($WISP_STORE)")
    p.add_argument("--runtime", choices=["auto", "zygote", "sandbox", "local", "ray"],
                   help="where containers run: this machine (auto: sandbox where the kernel allows it, else zygote; "
                        "zygote: forked from zygotes; sandbox: zygote's forks in namespaces of their own, with "
                        "seccomp; local: a fresh process "
                        "each) or ray: the nodes of a Ray cluster ($WISP_RUNTIME)")
    p.add_argument("--ray-address", help="the Ray cluster's address, HOST:PORT as `ray start --head` printed it "
                                         "($WISP_RAY_ADDRESS)")
    p.set_defaults(run=server.start)
    servers.add_parser("stop", help="stop the server and every container").set_defaults(run=server.stop)
    servers.add_parser("status", help="is a server running, and where").set_defaults(run=server.status)
    p = servers.add_parser("backup", help="a consistent copy of state.db, also while the server runs")
    p.add_argument("path", nargs="?", help="file or folder to write (default $WISP_HOME/backups/state-<time>.db)")
    p.add_argument("--store", help="the store the server was started with, when not state.db ($WISP_STORE)")
    p.set_defaults(run=server.backup)
    p = servers.add_parser("restore", help="put a backup in place of state.db (the server must be stopped)")
    p.add_argument("backup", nargs="?", help="the backup file (default the newest in $WISP_HOME/backups)")
    p.add_argument("--store", help="the store to restore, when not state.db ($WISP_STORE)")
    p.set_defaults(run=server.restore)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        code = args.run(args)
    except ClientError as exc:  # a server that refuses the token (WISP_TOKEN), wherever it was first asked
        _output.fail(exc.message)
        code = 1
    sys.exit(code)
