"""daphne + channels_rabbitmq, the peer channelgate's fan-out is compared with.
The channel layer keeps channels_rabbitmq's defaults (remote_capacity = local_capacity =
prefetch = 100, expiry 60 s), as channelgate's [broker] defaults mirror them."""
import os

SECRET_KEY = "cg-bench-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
ROOT_URLCONF = "benchapp.urls"
ASGI_APPLICATION = "benchapp.asgi.application"
USE_TZ = True
DATABASES = {}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_rabbitmq.core.RabbitmqChannelLayer",
        "CONFIG": {"host": os.environ.get("BENCHAPP_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2f")},
    }
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
