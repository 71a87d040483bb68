"""Views of the three seed deployments' auth endpoints, as each app would add them
for channelgate (conf/examples/*.toml)."""
from django.contrib.auth import authenticate, login
from django.http import HttpResponse, HttpResponseForbidden, JsonResponse
from django.middleware.csrf import get_token
from django.views.decorators.csrf import csrf_exempt

# Which job ids each user may read (AWX's consumer_access check, reduced to a table).
JOBS_READABLE = {"alice": {"12"}, "bob": {"13"}}


@csrf_exempt
def awx_login(request):
    """Session login that also sets the csrftoken cookie, as AWX's UI login does."""
    user = authenticate(request, username=request.POST.get("username"), password=request.POST.get("password"))
    if user is None:
        return HttpResponseForbidden("bad credentials")
    login(request, user)
    get_token(request)  # sets the csrftoken cookie on this response
    return JsonResponse({"user": user.id})


def catmaid_ws_auth(request):
    """CATMAID: the logged-in user's id; channelgate joins updates-<id>."""
    if not request.user.is_authenticated:
        return HttpResponseForbidden()
    return JsonResponse({"user": str(request.user.id)})


def awx_ws_auth(request):
    """AWX: the user, and the group patterns every user may read without a check."""
    if not request.user.is_authenticated:
        return HttpResponseForbidden()
    uid = request.user.id
    return JsonResponse({"user": uid, "subscribe": ["jobs-*", "schedules-*", f"control-limit_reached_{uid}"]})


def awx_ws_authorize(request):
    """AWX: may this user read the resource behind ?group=<key>-<id>?"""
    if not request.user.is_authenticated:
        return HttpResponseForbidden()
    group = request.GET.get("group", "")
    key, _, oid = group.rpartition("-")
    if key in ("job_events", "jobs") and oid in JOBS_READABLE.get(request.user.username, set()):
        return HttpResponse(status=204)
    return HttpResponseForbidden()


@csrf_exempt
def my_channel(request):
    """Inbound-HTTP target that answers with the sender's channel name, so a test client
    can learn how to be addressed alone (channels_rabbitmq's __asgi_channel__)."""
    return HttpResponse(request.headers.get("X-Channelgate-Channel", ""), content_type="text/plain")
