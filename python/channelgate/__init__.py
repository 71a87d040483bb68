"""The app side of channelgate.

- :func:`publish` / :func:`send`: push an event to a group / one WebSocket connection
  through channelgate's admin API (``POST /publish/<group>``, ``POST /send/<channel>``).
- :func:`verify`: check the ``X-Channelgate-Signature`` of a call channelgate made to the
  app (auth, authorize, inbound frames) and read who it is about.
- :mod:`channelgate.django`: ``@channelgate_hook``, a middleware and ``auth_answer``.
"""
from .publish import PublishError, publish, send
from .signing import SIGNATURE_HEADER, Hook, InvalidSignature, sign, verify

__all__ = [
    "Hook",
    "InvalidSignature",
    "PublishError",
    "SIGNATURE_HEADER",
    "publish",
    "send",
    "sign",
    "verify",
]
__version__ = "0.1.0"
