"""daphne -b 127.0.0.1 -p PORT benchapp.asgi:application  (PYTHONPATH=benches/fanout/daphne_app)"""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchapp.settings")

import django  # noqa: E402

django.setup()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from benchapp.consumers import BenchConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {"websocket": URLRouter([re_path(r"^ws/(?P<group>[\w.-]+)/$", BenchConsumer.as_asgi())])}
)
