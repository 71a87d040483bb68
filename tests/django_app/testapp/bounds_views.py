"""Views for tests/ws_bounds.rs: an app that is slow to answer inbound WebSocket frames."""
import sys
import time

from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

SLOW_SECONDS = 3


@csrf_exempt
def slow_receive(request):
    """inbound = { http = ... } target that takes SLOW_SECONDS, logging when it starts and
    ends (to gunicorn's log, which the test reads), then answers the frame back."""
    text = request.body.decode("utf-8", errors="replace")
    sys.stderr.write(f"slow-receive started: {text}\n")
    sys.stderr.flush()
    time.sleep(SLOW_SECONDS)
    sys.stderr.write(f"slow-receive done: {text}\n")
    sys.stderr.flush()
    return HttpResponse(f"slow reply: {text}", content_type="text/plain; charset=utf-8")
