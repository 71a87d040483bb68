import pytest

import channelgate
from channelgate.signing import canonical

SECRET = "0123456789abcdef-test-secret"
HEADERS = {
    "X-Channelgate-User": "alice",
    "x-channelgate-channel": "specific.abc!def",
    "X-Channelgate-Param-Room": "lobby",
    "Cookie": "sessionid=x",
}
PATH = "/ws/receive/?a=1&b=%20"
# The same vector as src/upstream/signing.rs known_answer_shared_with_the_python_package.
KNOWN = "408c74ccd05db7b7e24432aeb70dd1dd2e913dd9b6a70d28ba9f8d54c57f90d2"


def signed(t=1700000000, **extra):
    h = dict(HEADERS, **extra)
    h["X-Channelgate-Signature"] = channelgate.sign(SECRET, "POST", PATH, h, t=t)
    return h


def test_canonical_form_and_known_answer():
    assert canonical(1700000000, "post", PATH, HEADERS) == (
        b"1700000000\nPOST\n/ws/receive/?a=1&b=%20\n"
        b"x-channelgate-channel:specific.abc!def\n"
        b"x-channelgate-param-room:lobby\n"
        b"x-channelgate-user:alice\n"
    )
    assert channelgate.sign(SECRET, "POST", PATH, HEADERS, t=1700000000) == f"t=1700000000,v1={KNOWN}"


def test_accepts_a_good_signature_and_reads_identity():
    hook = channelgate.verify(signed(), "POST", PATH, SECRET, now=1700000100)
    assert hook.user == "alice"
    assert hook.channel == "specific.abc!def"
    assert hook.params == {"room": "lobby"}
    assert hook.timestamp == 1700000000
    # a list of secrets (rotation), and (name, value) pairs
    pairs = list(signed().items())
    assert channelgate.verify(pairs, "POST", PATH, ["other-secret-000000", SECRET], now=1700000000).user == "alice"


@pytest.mark.parametrize(
    "mutate, why",
    [
        (lambda h, p: (dict(h, **{"X-Channelgate-User": "admin"}), p), "tampered"),
        (lambda h, p: (dict(h, **{"X-Channelgate-Group": "x"}), p), "tampered"),
        (lambda h, p: (h, "/ws/receive/?a=2&b=%20"), "tampered"),
        (lambda h, p: ({k: v for k, v in h.items() if k != "X-Channelgate-Signature"}, p), "unsigned"),
        (lambda h, p: (dict(h, **{"X-Channelgate-Signature": "t=1700000000,v1=" + "0" * 64}), p), "forged"),
        (lambda h, p: (dict(h, **{"X-Channelgate-Signature": "garbage"}), p), "malformed"),
    ],
)
def test_refuses(mutate, why):
    h, p = mutate(signed(), PATH)
    with pytest.raises(channelgate.InvalidSignature) as e:
        channelgate.verify(h, "POST", p, SECRET, now=1700000000)
    assert why in str(e.value)


def test_refuses_stale_and_future_and_other_secret():
    with pytest.raises(channelgate.InvalidSignature, match="stale"):
        channelgate.verify(signed(), "POST", PATH, SECRET, now=1700000301)
    with pytest.raises(channelgate.InvalidSignature, match="stale"):
        channelgate.verify(signed(), "POST", PATH, SECRET, max_age=10, now=1699999000)
    with pytest.raises(channelgate.InvalidSignature, match="forged"):
        channelgate.verify(signed(), "POST", PATH, "another-secret-of-length", now=1700000000)
    with pytest.raises(channelgate.InvalidSignature):
        channelgate.verify(signed(), "GET", PATH, SECRET, now=1700000000)
