"""A minimal Django Channels project served by daphne with channels_rabbitmq: the
'before' side of a migration, sharing groups with channelgate through RabbitMQ."""
import os

SECRET_KEY = "daphne-test-app-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
ROOT_URLCONF = "daphneapp.urls"
ASGI_APPLICATION = "daphneapp.asgi.application"
USE_TZ = True
DATABASES = {}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_rabbitmq.core.RabbitmqChannelLayer",
        "CONFIG": {"host": os.environ.get("DAPHNEAPP_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2f")},
    }
}
LOGGING = {
    "version": 1,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
