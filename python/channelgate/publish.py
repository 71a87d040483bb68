"""Publishing from synchronous code (a Django view, a Celery task, a cron script) through
channelgate's admin listener: ``POST /publish/<group>`` and ``POST /send/<channel>``."""
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional, Union

DEFAULT_ADMIN = "http://127.0.0.1:9100"

Event = Union[dict, str]


class PublishError(Exception):
    """channelgate refused the message or could not be reached.

    ``status`` is the HTTP status (0 when there was no answer)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


def _setting(name: str) -> Optional[str]:
    try:
        from django.conf import settings  # optional

        if settings.configured and getattr(settings, name, None):
            return getattr(settings, name)
    except ImportError:
        pass
    return os.environ.get(name) or None


def _post(kind: str, name: str, event: Event, admin, token, timeout) -> Any:
    admin = admin or _setting("CHANNELGATE_ADMIN") or DEFAULT_ADMIN
    token = token if token is not None else _setting("CHANNELGATE_PUBLISH_TOKEN")
    if isinstance(event, dict):
        body, ctype = json.dumps(event).encode("utf-8"), "application/json"
    elif isinstance(event, str):
        body, ctype = event.encode("utf-8"), "text/plain; charset=utf-8"
    else:
        raise TypeError("event must be a dict (JSON event with a 'type') or a str")
    url = f"{admin.rstrip('/')}/{kind}/{urllib.parse.quote(name, safe='')}"
    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("Content-Type", ctype)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            message = json.loads(raw).get("error") or raw.decode("utf-8", "replace")
        except (ValueError, AttributeError):
            message = raw.decode("utf-8", "replace")
        raise PublishError(e.code, message) from None
    except (urllib.error.URLError, OSError) as e:
        raise PublishError(0, f"channelgate unreachable at {admin}: {e}") from None


def publish(group: str, event: Event, admin: Optional[str] = None,
            token: Optional[str] = None, timeout: float = 5.0) -> Any:
    """Sends ``event`` to every connection in ``group``; returns channelgate's answer
    (``{"group": ..., "delivered": <local connections>}``).

    ``event``: a dict with a ``type`` (Channels style, JSON) or a str (text message).
    ``admin`` defaults to settings/env ``CHANNELGATE_ADMIN``, else ``http://127.0.0.1:9100``;
    ``token`` to ``CHANNELGATE_PUBLISH_TOKEN`` (``[admin] publish_token``).
    Raises :class:`PublishError`.
    """
    return _post("publish", group, event, admin, token, timeout)


def send(channel: str, event: Event, admin: Optional[str] = None,
         token: Optional[str] = None, timeout: float = 5.0) -> Any:
    """Sends ``event`` to one connection, by the channel name channelgate gave it
    (``X-Channelgate-Channel`` on its calls). Like :func:`publish` otherwise."""
    return _post("send", channel, event, admin, token, timeout)
