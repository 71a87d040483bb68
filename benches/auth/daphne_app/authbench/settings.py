"""daphne + Django Channels peer for benches/auth: the test app's settings (same
SECRET_KEY, same SQLite database via TESTAPP_DB, same session engine and cookie name), so
a session cookie from the test app's POST /accounts/login/ under gunicorn is valid here,
plus channels and the channels_rabbitmq layer with its defaults (as in benches/fanout).

PYTHONPATH=benches/auth/daphne_app:tests/django_app
"""
import os

from testapp.settings import *  # noqa: F401,F403  (SECRET_KEY, DATABASES, sessions, auth)
from testapp.settings import INSTALLED_APPS as _TESTAPP_APPS

INSTALLED_APPS = [*_TESTAPP_APPS, "channels"]
ASGI_APPLICATION = "authbench.asgi.application"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_rabbitmq.core.RabbitmqChannelLayer",
        "CONFIG": {"host": os.environ.get("BENCHAPP_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2f")},
    }
}
