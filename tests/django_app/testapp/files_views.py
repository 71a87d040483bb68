"""Views for channelgate's static-file, X-Accel-Redirect and compression tests.

GET /accel/<path>          X-Accel-Redirect: /protected/<path> with an empty body, the way
                           a view hands a protected file to the proxy; ?deny=1 -> 403;
                           ?expires=N -> X-Accel-Expires: N; ?rate=N -> X-Accel-Limit-Rate
GET /sendfile/<path>       django-sendfile2's nginx backend (SENDFILE_ROOT =
                           $TESTAPP_PROTECTED_ROOT, SENDFILE_URL = /protected): what CATMAID
                           and most Django apps use; 404 when the file does not exist
GET /accel-nowhere/        X-Accel-Redirect to a path no location serves
GET /text/?bytes=N[&type=T] N bytes of deterministic, compressible text (type default
                           application/json); the same bytes on every call
GET /stream-gated/?dir=D&chunks=N
                           text/plain streamed in N lines; after line i the view waits
                           (up to 60 s) for the file D/ack-i, which the client creates once
                           it has read line i: a response that is held back anywhere on
                           the way never gets its acks, so the test cannot pass by timing
"""
import os
import time

from django.http import HttpResponse, StreamingHttpResponse
from django_sendfile import sendfile

WORDS = (
    "channel gate static file proxy upstream gunicorn django websocket group broker "
    "rabbit message frame route header body range etag vary compress gzip zstd"
).split()


def accel(request, path):
    if request.GET.get("deny"):
        return HttpResponse("not yours\n", status=403, content_type="text/plain")
    resp = HttpResponse()
    resp["X-Accel-Redirect"] = "/protected/" + path
    resp["Content-Disposition"] = 'attachment; filename="%s"' % os.path.basename(path)
    resp["Content-Type"] = "application/octet-stream"
    if request.GET.get("expires"):
        resp["X-Accel-Expires"] = request.GET["expires"]
    if request.GET.get("rate"):
        resp["X-Accel-Limit-Rate"] = request.GET["rate"]
    return resp


def send(request, path):
    root = os.environ.get("TESTAPP_PROTECTED_ROOT", "/nonexistent")
    return sendfile(request, os.path.join(root, path), attachment=True)


def accel_nowhere(request):
    resp = HttpResponse()
    resp["X-Accel-Redirect"] = "/nowhere/file.txt"
    return resp


def text_body(n):
    out = []
    size = 0
    i = 0
    while size < n:
        w = WORDS[(i * 7 + i // 13) % len(WORDS)] + ("\n" if i % 11 == 10 else " ")
        out.append(w)
        size += len(w)
        i += 1
    return "".join(out).encode()[:n]


def text(request):
    n = max(0, min(int(request.GET.get("bytes", "4096")), 64 << 20))
    ctype = request.GET.get("type", "application/json")
    return HttpResponse(text_body(n), content_type=ctype)


def stream_gated(request):
    ack_dir = request.GET["dir"]
    chunks = int(request.GET.get("chunks", "3"))

    def lines():
        for i in range(chunks):
            yield ("line %d %s\n" % (i, " ".join(WORDS))).encode()
            deadline = time.monotonic() + 60
            while not os.path.exists(os.path.join(ack_dir, "ack-%d" % i)):
                if time.monotonic() > deadline:
                    return
                time.sleep(0.02)

    return StreamingHttpResponse(lines(), content_type="text/plain")
