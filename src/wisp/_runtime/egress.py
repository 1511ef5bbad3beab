"""The build sandbox's one way out (issue 15, point 5): a forwarder inside the build's network
namespace, which has only loopback. It listens on 127.0.0.1:<port> (what HTTPS_PROXY/HTTP_PROXY
name) and relays every connection, byte for byte, to a Unix socket bound to a file path (such a
socket is reachable across network namespaces) where the server's egress proxy decides what may
pass. It decides nothing itself.

    python -I egress.py PORT SOCKET NPROC COMMAND...

It binds first, then runs COMMAND as its child (so the proxy is there before the build step's
first request; with RLIMIT_NPROC lowered to NPROC unless it is 0) and exits with the command's
status. Standard library only, run as a script: it
starts in the sandbox with nothing importable but the interpreter's own library.
"""
from __future__ import annotations

import contextlib
import os
import resource
import socket
import sys
import threading

CHUNK = 1 << 16


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(CHUNK):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _relay(client: socket.socket, socket_path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(socket_path)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _accept(listener: socket.socket, socket_path: str) -> None:
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_relay, args=(client, socket_path), daemon=True).start()


def main(argv: list[str]) -> int:
    port, socket_path, nproc, command = int(argv[0]), argv[1], int(argv[2]), argv[3:]
    listener = socket.create_server(("127.0.0.1", port))
    pid = os.fork()
    if pid == 0:
        listener.close()
        try:
            if nproc:  # the build uid's processes and threads, all builds together: a fork bomb stops here
                resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
            os.execvp(command[0], command)
        except OSError as exc:
            print(f"{command[0]}: {exc.strerror}", file=sys.stderr, flush=True)
            os._exit(127)
    threading.Thread(target=_accept, args=(listener, socket_path), daemon=True).start()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


if __name__ == "__main__":
    code = main(sys.argv[1:])
    os._exit(code if code >= 0 else 128 - code)
