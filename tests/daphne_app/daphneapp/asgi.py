import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "daphneapp.settings")

import django  # noqa: E402

django.setup()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from daphneapp.consumers import GroupConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {"websocket": URLRouter([re_path(r"^ws/(?P<group>[\w.-]+)/$", GroupConsumer.as_asgi())])}
)
