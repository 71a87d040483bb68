import pytest

django = pytest.importorskip("django")
from django.conf import settings  # noqa: E402

SECRET = "0123456789abcdef-test-secret"
if not settings.configured:
    settings.configure(
        CHANNELGATE_HOOK_SECRET=SECRET,
        CHANNELGATE_HOOK_PATHS=["/hook/"],
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
        DATABASES={},
    )
    django.setup()

import time  # noqa: E402

from django.http import HttpResponse  # noqa: E402
from django.test import RequestFactory  # noqa: E402

import channelgate  # noqa: E402
from channelgate.django import ChannelgateHookMiddleware, auth_answer, channelgate_hook  # noqa: E402


@channelgate_hook
def view(request):
    h = request.channelgate
    return HttpResponse(f"{h.user} {h.channel} {h.params}")


def call(path="/hook/in/?x=1", extra=None, sign=True, t=None, raw_uri=True):
    headers = {"X-Channelgate-User": "7", "X-Channelgate-Channel": "c!d"}
    if sign:
        headers["X-Channelgate-Signature"] = channelgate.sign(SECRET, "POST", path, headers, t=t)
    headers.update(extra or {})
    meta = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
    if raw_uri:
        meta["RAW_URI"] = path
    return RequestFactory().post(path, data=b"body", content_type="text/plain", **meta)


def test_decorator_accepts_signed_and_refuses_the_rest():
    assert view.csrf_exempt
    r = view(call())
    assert r.status_code == 200 and r.content == b"7 c!d {}"
    assert view(call(raw_uri=False)).status_code == 200  # path rebuilt from PATH_INFO/QUERY_STRING
    assert view(call(sign=False)).status_code == 403
    assert view(call(extra={"X-Channelgate-User": "admin"})).status_code == 403
    assert view(call(t=int(time.time()) - 301)).status_code == 403
    assert view(call(extra={"X-Channelgate-Signature": "t=1,v1=" + "a" * 64})).status_code == 403


def test_middleware_guards_configured_paths_only():
    mw = ChannelgateHookMiddleware(lambda req: HttpResponse(str(req.channelgate and req.channelgate.user)))
    assert mw(call()).content == b"7"
    assert mw(call(sign=False)).status_code == 403
    assert mw(RequestFactory().get("/other/")).content == b"None"


def test_auth_answer():
    class User:
        pk = 42
        is_authenticated = True

        def get_username(self):
            return "alice"

    import json

    r = auth_answer(User(), groups=["updates-{user}"], subscribe=["jobs-*"])
    assert json.loads(r.content) == {
        "user": "42",
        "groups": ["updates-42"],
        "meta": {"username": "alice"},
        "subscribe": ["jobs-*"],
    }

    class Anon:
        is_authenticated = False

    assert auth_answer(Anon()).status_code == 403
