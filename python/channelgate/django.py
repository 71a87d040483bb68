"""Django helpers: ``@channelgate_hook`` (or :class:`ChannelgateHookMiddleware`) refuses
calls channelgate did not sign with 403 and gives the view ``request.channelgate``, a
:class:`channelgate.Hook` (``.user``, ``.channel``, ``.route``, ``.group``, ``.params``);
:func:`auth_answer` turns ``request.user`` into the answer a WebSocket auth view gives.

Settings: ``CHANNELGATE_HOOK_SECRET_FILE`` (preferred) or ``CHANNELGATE_HOOK_SECRET``,
the same secret as channelgate's ``[upstream] hook_secret_file``;
``CHANNELGATE_HOOK_MAX_AGE`` (seconds, default 300); for the middleware,
``CHANNELGATE_HOOK_PATHS``, the path prefixes that must be signed calls.
"""
import functools
from urllib.parse import quote

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponseForbidden, JsonResponse

from .signing import InvalidSignature, verify

_SAFE = "/:@!$&'()*+,;=-._~%"


def hook_secret():
    """The configured secret; ImproperlyConfigured when there is none."""
    path = getattr(settings, "CHANNELGATE_HOOK_SECRET_FILE", None)
    if path:
        with open(path, "rb") as f:
            secret = f.read().strip()
    else:
        secret = getattr(settings, "CHANNELGATE_HOOK_SECRET", None)
    if not secret:
        raise ImproperlyConfigured(
            "set CHANNELGATE_HOOK_SECRET_FILE (or CHANNELGATE_HOOK_SECRET) to channelgate's "
            "[upstream] hook_secret to verify its calls"
        )
    return secret


def request_target(request):
    """The path and query as they were on the request line."""
    meta = request.META
    raw = meta.get("RAW_URI") or meta.get("REQUEST_URI")
    if raw:
        if raw.startswith(("http://", "https://")):  # absolute form
            raw = "/" + raw.split("/", 3)[3] if raw.count("/") >= 3 else "/"
        return raw
    path = meta.get("SCRIPT_NAME", "") + meta.get("PATH_INFO", "")
    target = quote(path.encode("latin-1", "replace"), safe=_SAFE)
    query = meta.get("QUERY_STRING", "")
    return f"{target}?{query}" if query else target


def check(request, secret=None, max_age=None):
    """Verifies ``request``; sets and returns ``request.channelgate``. Raises
    :class:`channelgate.InvalidSignature`."""
    max_age = max_age or getattr(settings, "CHANNELGATE_HOOK_MAX_AGE", 300)
    hook = verify(
        request.headers,
        request.method,
        request_target(request),
        secret or hook_secret(),
        max_age=max_age,
    )
    request.channelgate = hook
    return hook


def _forbidden(e):
    return HttpResponseForbidden(f"channelgate signature refused: {e}\n", content_type="text/plain")


def channelgate_hook(view=None, *, secret=None, max_age=None):
    """View decorator: 403 unless channelgate signed this call (CSRF-exempt: the
    signature is the proof of origin). ``@channelgate_hook`` or
    ``@channelgate_hook(max_age=60)``."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            try:
                check(request, secret, max_age)
            except InvalidSignature as e:
                return _forbidden(e)
            return view(request, *args, **kwargs)

        wrapped.csrf_exempt = True
        return wrapped

    return decorate(view) if view is not None else decorate


class ChannelgateHookMiddleware:
    """Requests under ``settings.CHANNELGATE_HOOK_PATHS`` must be signed (403 otherwise)
    and get ``request.channelgate``; other requests get ``request.channelgate = None``.
    Put it before CsrfViewMiddleware and mark the hook views ``csrf_exempt``."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.paths = tuple(getattr(settings, "CHANNELGATE_HOOK_PATHS", ()))

    def __call__(self, request):
        request.channelgate = None
        if self.paths and request.path.startswith(self.paths):
            try:
                check(request)
            except InvalidSignature as e:
                return _forbidden(e)
        return self.get_response(request)


def auth_answer(user, groups=(), meta=None, subscribe=None, status_if_anonymous=403):
    """The answer to channelgate's WebSocket auth call for ``user`` (``request.user``):
    ``{"user": "<pk>", "groups": [...], "meta": {"username": ...}}`` (``{user}`` in a group
    name becomes the pk), or 403 for an anonymous user."""
    if user is None or not getattr(user, "is_authenticated", False):
        return JsonResponse({"error": "not authenticated"}, status=status_if_anonymous)
    uid = str(user.pk)
    body = {
        "user": uid,
        "groups": [g.replace("{user}", uid) for g in groups],
        "meta": meta if meta is not None else {"username": user.get_username()},
    }
    if subscribe is not None:
        body["subscribe"] = [p.replace("{user}", uid) for p in subscribe]
    return JsonResponse(body)
