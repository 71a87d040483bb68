"""``X-Channelgate-Signature``: how the app knows a call came from channelgate.

With ``[upstream] hook_secret_file`` set, every request channelgate itself makes to the
app (WebSocket auth, authorize, inbound frames) carries::

    X-Channelgate-Signature: t=<unix seconds>,v1=<64 lowercase hex digits>

``v1`` is HMAC-SHA256, keyed with the secret (its bytes, surrounding whitespace removed),
of the canonical form, these bytes::

    <t> "\\n" <METHOD> "\\n" <request target> "\\n"
    and for every X-Channelgate-* header except the signature, sorted by lowercase name:
        <lowercase name> ":" <value> "\\n"

- the request target is the path and query exactly as on the request line
  (``/ws/receive/?a=1``), as gunicorn gives it in ``RAW_URI``;
- a header sent several times contributes its values joined by ``,``;
- values are the header's bytes (latin-1 as WSGI decodes them);
- the body is not covered: it is the WebSocket client's input, untrusted either way.

channelgate removes every ``X-Channelgate-*`` header a client sends, so any such header
the app sees came from channelgate, and :func:`verify` refuses a call carrying one the
signature does not cover. ``t`` must lie within ``max_age`` seconds of now (replay bound).
"""
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

SIGNATURE_HEADER = "X-Channelgate-Signature"
PREFIX = "x-channelgate-"
_SIG = SIGNATURE_HEADER.lower()

Secret = Union[str, bytes]


class InvalidSignature(ValueError):
    """The call is unsigned, forged, tampered with or stale; ``str(e)`` says which."""


@dataclass(frozen=True)
class Hook:
    """What channelgate says about the WebSocket connection behind a verified call."""

    user: Optional[str]
    channel: Optional[str]
    route: Optional[str]
    group: Optional[str]
    params: Dict[str, str] = field(default_factory=dict)
    timestamp: int = 0
    headers: Dict[str, str] = field(default_factory=dict)


def _pairs(headers) -> Iterable[Tuple[str, str]]:
    items = headers.items() if hasattr(headers, "items") else headers
    for name, value in items:
        yield str(name), str(value)


def _own_headers(headers) -> Dict[str, str]:
    """The X-Channelgate-* headers, lowercase names, repeated ones joined by ','."""
    out: Dict[str, list] = {}
    for name, value in _pairs(headers):
        n = name.lower().replace("_", "-")
        if n.startswith(PREFIX):
            out.setdefault(n, []).append(value)
    return {n: ",".join(v) for n, v in out.items()}


def _bytes(s: str) -> bytes:
    try:
        return s.encode("latin-1")
    except UnicodeEncodeError:
        return s.encode("utf-8")


def canonical(t: int, method: str, path: str, headers) -> bytes:
    """The signed bytes (see the module documentation)."""
    own = _own_headers(headers)
    out = [f"{t}\n{method.upper()}\n".encode("ascii"), _bytes(path), b"\n"]
    for name in sorted(own):
        if name != _SIG:
            out += [name.encode("ascii"), b":", _bytes(own[name]), b"\n"]
    return b"".join(out)


def _key(secret: Secret) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    return key.strip()


def sign(secret: Secret, method: str, path: str, headers, t: Optional[int] = None) -> str:
    """The header value channelgate would send (for tests and other callers)."""
    t = int(time.time()) if t is None else int(t)
    mac = hmac.new(_key(secret), canonical(t, method, path, headers), hashlib.sha256)
    return f"t={t},v1={mac.hexdigest()}"


def _parse(value: str) -> Tuple[int, Sequence[str]]:
    t, sigs = None, []
    for part in value.split(","):
        k, _, v = part.strip().partition("=")
        if k == "t" and v.isdigit() and len(v) <= 12:
            t = int(v)
        elif k == "v1" and len(v) == 64:
            sigs.append(v.lower())
    if t is None or not sigs:
        raise InvalidSignature("malformed X-Channelgate-Signature")
    return t, sigs


def verify(
    headers,
    method: str,
    path: str,
    secret: Union[Secret, Sequence[Secret]],
    max_age: int = 300,
    now: Optional[float] = None,
) -> Hook:
    """Checks a call from channelgate; returns its :class:`Hook` or raises
    :class:`InvalidSignature`.

    ``headers``: a mapping or (name, value) pairs (Django's ``request.headers`` works);
    ``path``: the request target, path and query, as sent; ``secret``: the hook secret, or
    a list of them while rotating; ``max_age``: seconds a signature stays valid.
    """
    own = _own_headers(headers)
    value = own.get(_SIG)
    if not value:
        raise InvalidSignature("unsigned: no X-Channelgate-Signature")
    t, sigs = _parse(value)
    now = time.time() if now is None else now
    if abs(now - t) > max_age:
        raise InvalidSignature(f"stale: signed {int(now - t)} s ago (max_age {max_age} s)")
    secrets = [secret] if isinstance(secret, (str, bytes, bytearray)) else list(secret)
    if not secrets or any(not _key(s) for s in secrets):
        raise InvalidSignature("no hook secret configured")
    message = canonical(t, method, path, headers)
    ok = False
    for s in secrets:
        expected = hmac.new(_key(s), message, hashlib.sha256).hexdigest()
        for given in sigs:
            ok |= hmac.compare_digest(expected, given)
    if not ok:
        raise InvalidSignature("forged or tampered: the signature does not match")
    params = {
        n[len(PREFIX + "param-"):]: v for n, v in own.items() if n.startswith(PREFIX + "param-")
    }
    return Hook(
        user=own.get(PREFIX + "user"),
        channel=own.get(PREFIX + "channel"),
        route=own.get(PREFIX + "route"),
        group=own.get(PREFIX + "group"),
        params=params,
        timestamp=t,
        headers={n: v for n, v in own.items() if n != _SIG},
    )
