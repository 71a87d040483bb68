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
import time

from django.contrib.auth import authenticate, get_user_model, login
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

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
    uid = str(user.pk)
    resp = JsonResponse(
        {"user": uid, "groups": [f"updates-{uid}"], "meta": {"username": user.get_username()}}
    )
    resp["X-Channelgate-User"] = uid
    return resp
