"""Views of the channelgate end-to-end test app (plain Django, small JSON).

GET  /healthz            200 "ok" (text/plain); 503 "unhealthy" while the file
                         named by $TESTAPP_UNHEALTHY_FILE exists
ANY  /headers/[sub/path] {"method", "path", "query", "name", "headers", ...}
ANY  /upload/[anything]  streams the body in 64 KiB reads -> {"bytes", "sha256", "method", ...}
GET  /download/?bytes=N[&chunked=1]
                         exactly N bytes of the pattern below; Content-Length
                         unless chunked=1 (then Transfer-Encoding: chunked)
GET  /slow/?seconds=S    sleeps S seconds -> {"slept": S, "name"}
ANY  /status/<code>/     responds with that status
GET  /whoami/            {"name", "pid"}
POST /accounts/login/    form (or JSON) username/password -> {"user": id} + session cookie; 403 if bad
ANY  /ws-auth/           session or "Authorization: Bearer alice-token|bob-token" ->
                         200 {"user": "<id>", "groups": ["updates-<id>"], "meta": {"username"}}
                         with header X-Channelgate-User: <id>; else 403
ANY  /ws-auth-slow/      sleeps 5 s, then answers like /ws-auth/ (auth timeout tests)
ANY  /ws-auth-error/     500
ANY  /ws-auth-headers/   like /ws-auth/, but success is 200 with an empty body and the
                         headers X-Channelgate-User: <id>, X-Channelgate-Groups: "extra-a, extra-b"
POST /notify/            form or JSON {group, text}: publishes
                         {"type": "notify.message", "text": text} to that group with
                         channelgate.publish (POST $CHANNELGATE_ADMIN/publish/<group>, Bearer
                         $CHANNELGATE_PUBLISH_TOKEN when set) and answers with channelgate's
                         answer, or {"error"} with its status. 400 on missing/invalid fields, 502 if channelgate
                         cannot be reached, 500 if CHANNELGATE_ADMIN is unset.
POST /notify-me/         form or JSON {text}, session login required (403 otherwise):
                         the same publish to group "updates-<user id>" (the CATMAID pattern)
ANY  /hook/...           channelgate's signed calls, verified by the channelgate
                         package: see hook_views.py
POST /ws/receive/        channelgate's inbound-HTTP hook: text/plain
                         "reply to <X-Channelgate-User|anonymous> in <X-Channelgate-Param-Room|->: <body>";
                         body "silent" -> 204 (empty), body "fail" -> 500

Download pattern: BLOCK = bytes(range(256)) * 256 (65536 bytes), repeated and
the last block truncated to N bytes in total. No hash header is sent (it would
have to precede the body); a client computes the expected sha256 itself, e.g.
    h = sha256(); full, rest = divmod(n, 65536)
    for _ in range(full): h.update(BLOCK)
    h.update(BLOCK[:rest])
Because 65536 is a multiple of 256, byte i of the body is simply i % 256.
"""
import hashlib
import json
import os
import re
import time

from django.contrib.auth import authenticate, get_user_model, login
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

import channelgate
from channelgate.django import auth_answer

CHUNK = 64 * 1024
BLOCK = bytes(range(256)) * 256  # 65536 bytes
assert len(BLOCK) == CHUNK

BEARER_TOKENS = {"alice-token": "alice", "bob-token": "bob"}


def _name():
    return os.environ.get("TESTAPP_NAME", "app")


def healthz(request):
    bad = os.environ.get("TESTAPP_UNHEALTHY_FILE")
    if bad and os.path.exists(bad):
        return HttpResponse("unhealthy", status=503, content_type="text/plain")
    return HttpResponse("ok", content_type="text/plain")


def _request_headers(request):
    out = {}
    for key, value in request.META.items():
        if key.startswith("HTTP_"):
            out[key[5:].lower().replace("_", "-")] = value
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        value = request.META.get(key)
        if value not in (None, ""):
            out[key.lower().replace("_", "-")] = value
    return out


@csrf_exempt
def headers(request):
    return JsonResponse(
        {
            "method": request.method,
            "path": request.path,  # percent-decoded PATH_INFO
            "raw_uri": request.META.get("RAW_URI"),  # request target as received (gunicorn)
            "query": request.META.get("QUERY_STRING", ""),
            "name": _name(),
            "remote_addr": request.META.get("REMOTE_ADDR", ""),
            "headers": _request_headers(request),
        }
    )


def _body_stream(request):
    """Return an object with .read(n) that yields the whole request body.

    Django wraps wsgi.input in a LimitedStream bounded by CONTENT_LENGTH and
    treats a missing CONTENT_LENGTH as 0, so a chunked body would read as
    empty through request.read(). gunicorn de-chunks wsgi.input itself and
    marks that with wsgi.input_terminated, so read it directly in that case.
    """
    meta = request.META
    if meta.get("CONTENT_LENGTH") in (None, "") and meta.get("wsgi.input_terminated"):
        return meta["wsgi.input"]
    return request


@csrf_exempt
def upload(request):
    stream = _body_stream(request)
    h = hashlib.sha256()
    n = 0
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            break
        n += len(chunk)
        h.update(chunk)
    return JsonResponse(
        {
            "bytes": n,
            "sha256": h.hexdigest(),
            "method": request.method,
            "chunked": "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower(),
            "name": _name(),
        }
    )


def _pattern(n):
    full, rest = divmod(n, CHUNK)
    for _ in range(full):
        yield BLOCK
    if rest:
        yield BLOCK[:rest]


def download(request):
    try:
        n = int(request.GET.get("bytes", "0"))
    except ValueError:
        return JsonResponse({"error": "bytes must be an integer"}, status=400)
    if n < 0:
        return JsonResponse({"error": "bytes must be >= 0"}, status=400)
    chunked = request.GET.get("chunked", "") not in ("", "0", "false")
    resp = StreamingHttpResponse(_pattern(n), content_type="application/octet-stream")
    if not chunked:
        resp["Content-Length"] = str(n)
    return resp


def slow(request):
    try:
        seconds = float(request.GET.get("seconds", "0"))
    except ValueError:
        return JsonResponse({"error": "seconds must be a number"}, status=400)
    time.sleep(max(seconds, 0.0))
    return JsonResponse({"slept": seconds, "name": _name()})


@csrf_exempt
def status(request, code):
    code = int(code)
    if not 100 <= code <= 599:
        return JsonResponse({"error": "status must be 100..599"}, status=400)
    if code in (204, 304) or code < 200:
        return HttpResponse(b"", status=code)
    return HttpResponse(f"{code}\n", status=code, content_type="text/plain")


def whoami(request):
    return JsonResponse({"name": _name(), "pid": os.getpid()})


@csrf_exempt
def login_view(request):
    if request.method != "POST":
        return JsonResponse({"error": "POST required"}, status=405)
    username = request.POST.get("username")
    password = request.POST.get("password")
    if username is None and request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
            username, password = data.get("username"), data.get("password")
        except (ValueError, AttributeError):
            pass
    user = authenticate(request, username=username, password=password)
    if user is None:
        return JsonResponse({"error": "bad credentials"}, status=403)
    login(request, user)
    return JsonResponse({"user": user.pk})


def _bearer_user(request):
    auth = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer":
        return None
    username = BEARER_TOKENS.get(token.strip())
    if username is None:
        return None
    return get_user_model().objects.filter(username=username, is_active=True).first()


@csrf_exempt
def ws_auth(request):
    user = request.user if request.user.is_authenticated else _bearer_user(request)
    if user is None:
        return JsonResponse({"error": "forbidden"}, status=403)
    resp = auth_answer(user, groups=["updates-{user}"])
    resp["X-Channelgate-User"] = str(user.pk)
    return resp


# ---------------------------------------------------------------- WebSocket auth variants

AUTH_SLOW_SECONDS = 5.0


@csrf_exempt
def ws_auth_slow(request):
    time.sleep(AUTH_SLOW_SECONDS)
    return ws_auth(request)


@csrf_exempt
def ws_auth_error(request):
    return HttpResponse("auth backend exploded\n", status=500, content_type="text/plain")


@csrf_exempt
def ws_auth_headers(request):
    user = request.user if request.user.is_authenticated else _bearer_user(request)
    if user is None:
        return JsonResponse({"error": "forbidden"}, status=403)
    resp = HttpResponse(b"", status=200)
    # No body: HttpResponse would still announce text/html; drop it so the answer is
    # headers only.
    del resp["Content-Type"]
    resp["X-Channelgate-User"] = str(user.pk)
    resp["X-Channelgate-Groups"] = "extra-a, extra-b"
    return resp


# ---------------------------------------------------------------- publishing via channelgate

# channelgate's group names: ^[a-zA-Z0-9\-_.]+$, shorter than 100 characters.
GROUP_RE = re.compile(r"[a-zA-Z0-9\-_.]{1,99}")  # use with fullmatch (no "$" newline gap)


def _fields(request, *names):
    """The named fields from a form body, or else from a JSON object body."""
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = {}
        return [data.get(n) for n in names]
    return [request.POST.get(n) for n in names]


def _publish(group, event):
    """Publishes with the channelgate package; a Django response mirroring its answer."""
    admin = os.environ.get("CHANNELGATE_ADMIN")
    if not admin:
        return JsonResponse({"error": "CHANNELGATE_ADMIN is not set"}, status=500)
    try:
        # The token comes from $CHANNELGATE_PUBLISH_TOKEN when set.
        answer = channelgate.publish(group, event, admin=admin)
    except channelgate.PublishError as e:
        if e.status == 0:
            return JsonResponse({"error": f"channelgate unreachable: {e.message}"}, status=502)
        return JsonResponse({"error": e.message}, status=e.status)
    return JsonResponse(answer)


def _bad_text(text):
    if not isinstance(text, str):
        return JsonResponse({"error": "field 'text' (a string) is required"}, status=400)
    return None


@csrf_exempt
def notify(request):
    if request.method != "POST":
        return JsonResponse({"error": "POST required"}, status=405)
    group, text = _fields(request, "group", "text")
    if not isinstance(group, str) or not GROUP_RE.fullmatch(group) or group in (".", ".."):
        # "." and ".." match channelgate's pattern but cannot travel as a path segment
        # (requests/urllib3 would resolve them as dot segments).
        return JsonResponse({"error": "field 'group' must match ^[a-zA-Z0-9\\-_.]{1,99}$ "
                                      "and not be '.' or '..'"}, status=400)
    bad = _bad_text(text)
    if bad:
        return bad
    return _publish(group, {"type": "notify.message", "text": text})


# Session login only (no bearer tokens), as a browser-facing Django view would be. CSRF
# exempt so that tests can call it with just the session cookie from /accounts/login/.
@csrf_exempt
def notify_me(request):
    if request.method != "POST":
        return JsonResponse({"error": "POST required"}, status=405)
    if not request.user.is_authenticated:
        return JsonResponse({"error": "forbidden"}, status=403)
    (text,) = _fields(request, "text")
    bad = _bad_text(text)
    if bad:
        return bad
    return _publish(f"updates-{request.user.pk}", {"type": "notify.message", "text": text})


# ---------------------------------------------------------------- inbound WebSocket frames

@csrf_exempt
def ws_receive(request):
    if request.method != "POST":
        return JsonResponse({"error": "POST required"}, status=405)
    stream = _body_stream(request)
    parts = []
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            break
        parts.append(chunk)
    body = b"".join(parts)
    if body == b"silent":
        resp = HttpResponse(b"", status=204)
        del resp["Content-Type"]
        return resp
    if body == b"fail":
        return HttpResponse("failing as asked\n", status=500, content_type="text/plain")
    user = request.headers.get("X-Channelgate-User") or "anonymous"
    room = request.headers.get("X-Channelgate-Param-Room") or "-"
    text = body.decode("utf-8", errors="replace")
    return HttpResponse(
        f"reply to {user} in {room}: {text}", content_type="text/plain; charset=utf-8"
    )
