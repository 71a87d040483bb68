"""The calls channelgate makes to the app, verified with the channelgate package
(python/): each view is ``@channelgate_hook``, so an unsigned, forged, tampered or stale
call is answered 403 before the view runs.

Environment:
  CHANNELGATE_HOOK_SECRET  channelgate's [upstream] hook_secret (settings.py reads it)
  TESTAPP_HOOK_LOG         when set, every accepted call appends one JSON line:
                           {"view", "method", "raw_uri", "remote_addr", "hook", "headers"}

ANY  /hook/ws-auth/    auth like /ws-auth/ (session or bearer token), via auth_answer()
ANY  /hook/authorize/  204 (allows every group); recorded
POST /hook/receive/    inbound frames: {"hook", "headers", "body"} as JSON
"""
import dataclasses
import json
import os

from django.http import HttpResponse, JsonResponse

from channelgate.django import auth_answer, channelgate_hook, request_target

from .views import _bearer_user, _request_headers


def _record(request, view):
    entry = {
        "view": view,
        "method": request.method,
        "raw_uri": request_target(request),
        "remote_addr": request.META.get("REMOTE_ADDR", ""),
        "hook": dataclasses.asdict(request.channelgate),
        "headers": _request_headers(request),
    }
    log = os.environ.get("TESTAPP_HOOK_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
    return entry


@channelgate_hook
def ws_auth(request):
    _record(request, "ws-auth")
    user = request.user if request.user.is_authenticated else _bearer_user(request)
    return auth_answer(user, groups=["updates-{user}"])


@channelgate_hook
def authorize(request):
    _record(request, "authorize")
    resp = HttpResponse(b"", status=204)
    del resp["Content-Type"]
    return resp


@channelgate_hook
def receive(request):
    entry = _record(request, "receive")
    entry["body"] = request.body.decode("utf-8", errors="replace")
    return JsonResponse(entry)
