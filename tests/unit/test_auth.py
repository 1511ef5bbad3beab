"""The gateway's admission checks (wisp.server.auth): proxy tokens and call tokens, as tables."""
from __future__ import annotations

import pytest

from wisp.server.auth import ProxyTokens, call_token_check, digest, new_proxy_token

KEY, SECRET = "wk-0123456789abcdef0123", "ws-the-secret"
OTHER_KEY, OTHER_SECRET = "wk-ffff", "ws-other"


@pytest.fixture
def tokens() -> ProxyTokens:
    return ProxyTokens([(KEY, digest(SECRET)), (OTHER_KEY, digest(OTHER_SECRET))])


@pytest.mark.parametrize(("headers", "admitted", "says"), [
    ([(b"Modal-Key", KEY.encode()), (b"Modal-Secret", SECRET.encode())], True, ""),
    ([(b"modal-key", KEY.encode()), (b"MODAL-SECRET", SECRET.encode())], True, ""),  # names are case-blind
    ([(b"Modal-Key", b" " + KEY.encode()), (b"Modal-Secret", SECRET.encode() + b" ")], True, ""),
    ([(b"Modal-Key", OTHER_KEY.encode()), (b"Modal-Secret", OTHER_SECRET.encode())], True, ""),
    ([], False, "send the Modal-Key and Modal-Secret headers"),
    ([(b"Modal-Key", KEY.encode())], False, "send the Modal-Key and Modal-Secret"),
    ([(b"Modal-Secret", SECRET.encode())], False, "send the Modal-Key and Modal-Secret"),
    ([(b"Modal-Key", KEY.encode()), (b"Modal-Secret", b"ws-wrong")], False, "not a valid proxy token"),
    ([(b"Modal-Key", KEY.encode()), (b"Modal-Secret", OTHER_SECRET.encode())], False, "not a valid"),  # crossed
    ([(b"Modal-Key", b"wk-unknown"), (b"Modal-Secret", SECRET.encode())], False, "not a valid"),
    ([(b"Authorization", f"Bearer {SECRET}".encode())], False, "send the Modal-Key"),
])
def test_proxy_token_admission(tokens: ProxyTokens, headers: list[tuple[bytes, bytes]], admitted: bool,
                               says: str) -> None:
    refused = tokens.refusal(headers)
    assert (refused is None) == admitted
    if refused is not None:
        assert refused.status == 401
        assert says in refused.message
        assert "wisp token create --proxy NAME" in refused.message
        assert SECRET not in refused.message


def test_a_removed_token_is_refused_at_once_and_others_still_pass(tokens: ProxyTokens) -> None:
    good = [(b"Modal-Key", KEY.encode()), (b"Modal-Secret", SECRET.encode())]
    assert tokens.refusal(good) is None
    tokens.remove(KEY)
    assert tokens.refusal(good) is not None
    assert tokens.refusal([(b"Modal-Key", OTHER_KEY.encode()), (b"Modal-Secret", OTHER_SECRET.encode())]) is None
    tokens.remove("wk-never-there")  # no error


def test_new_tokens_are_distinct_and_only_their_hash_is_kept() -> None:
    made = {new_proxy_token() for _ in range(50)}
    assert len({key for key, _ in made}) == len({secret for _, secret in made}) == 50
    key, secret = next(iter(made))
    assert key.startswith("wk-") and secret.startswith("ws-") and len(secret) > 40
    assert digest(secret) != secret and len(digest(secret)) == 64 and digest(secret) == digest(secret)


@pytest.mark.parametrize(("headers", "admitted"), [
    ([(b"x-wisp-call-token", b"tok")], True),
    ([(b"X-Wisp-Call-Token", b"tok")], True),
    ([(b"x-wisp-call-token", b"other")], False),
    ([(b"x-wisp-call-token", b"to")], False),
    ([], False),
    ([(b"Modal-Key", b"tok"), (b"Modal-Secret", b"tok")], False),
])
def test_call_token_admission(headers: list[tuple[bytes, bytes]], admitted: bool) -> None:
    refused = call_token_check("tok")(headers)
    assert (refused is None) == admitted
    if refused is not None:
        assert refused.status == 401 and "call token" in refused.message
