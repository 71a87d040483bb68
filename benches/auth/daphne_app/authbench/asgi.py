"""daphne -b 127.0.0.1 -p PORT authbench.asgi:application
(PYTHONPATH=benches/auth/daphne_app:tests/django_app, TESTAPP_DB=<the test app's SQLite file>)

  /channels/updates/   AuthMiddlewareStack(UpdatesConsumer): session cookie -> scope["user"]
  /channels/noauth/    NoAuthConsumer, no middleware (the daphne-noauth target)
"""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "authbench.settings")

import django  # noqa: E402

django.setup()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from authbench.consumers import NoAuthConsumer, UpdatesConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "websocket": URLRouter(
            [
                re_path(r"^channels/updates/$", AuthMiddlewareStack(UpdatesConsumer.as_asgi())),
                re_path(r"^channels/noauth/$", NoAuthConsumer.as_asgi()),
            ]
        )
    }
)
