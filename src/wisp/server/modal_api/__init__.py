"""Modal's own client API, served by wisp (issue 13): the official `modal` CLI and SDK, pointed
at this server with `eval "$(wisp modal env)"`, list, stop and read apps here.

The wire protocol is the `modal` package's (`modal_proto`, Apache-2.0), a dependency of the
optional `wisp[modal]` extra, imported and never copied. This package translates its requests
into wisp's own objects (`AppManager`); nothing else in the server knows about Modal.

- `tokens`: the one Modal token id/secret pair of a server, in `$WISP_HOME/modal-token` (0600).
- `service`: the RPCs wisp implements; every other RPC answers UNIMPLEMENTED with its name.
- `server`: the grpclib server on loopback, with the token check before any handler runs.
"""
from __future__ import annotations

MODAL_VERSION = "1.6.4"  # the pinned `modal` extra: the protocol this package was written against
