"""The grpclib server that answers Modal's client, on loopback beside the control API."""
from __future__ import annotations

from grpclib import GRPCError, Status
from grpclib.events import RecvRequest, listen
from grpclib.server import Server

from ..apps import AppManager
from .service import ModalService
from .tokens import ModalToken

UNAUTHENTICATED = ("This wisp server does not know the Modal token sent. Point the modal client at it with "
                   "`eval \"$(wisp modal env)\"`, which sets MODAL_SERVER_URL, MODAL_TOKEN_ID and MODAL_TOKEN_SECRET.")


def build_server(manager: AppManager, token: ModalToken) -> Server:
    service = ModalService(manager)
    manager.modal_service = service  # containers of Modal's entrypoint call their app's functions through it
    server = Server([service])

    async def check_token(event: RecvRequest) -> None:
        """Before any handler runs: the token id and secret the client sends as metadata."""
        token_id = event.metadata.get("x-modal-token-id", "")
        secret = event.metadata.get("x-modal-token-secret", "")
        if not isinstance(token_id, str) or not isinstance(secret, str) or not token.matches(token_id, secret):
            raise GRPCError(Status.UNAUTHENTICATED, UNAUTHENTICATED)

    listen(server, RecvRequest, check_token)
    return server
