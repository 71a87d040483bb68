"""Settings for the channelgate chat demo: plain WSGI Django, no ASGI, no Channels.

Environment:
  CHANNELGATE_ADMIN    channelgate's admin listener, where /announce/ publishes
                       (default http://127.0.0.1:9100)
  CHATDEMO_DB          SQLite file (default: <tempdir>/channelgate-chatdemo.sqlite3).
                       The demo stores nothing; the database is only configured so that
                       Django is set up like a normal project.
  CHATDEMO_SECRET_KEY  Django SECRET_KEY (default: a fixed demo key; set it anywhere real)
"""
import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get(
    "CHATDEMO_SECRET_KEY", "channelgate-chatdemo-insecure-demo-key-0123456789abcdef"
)
DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = []

MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]

APPEND_SLASH = False
ROOT_URLCONF = "chatdemo.urls"
WSGI_APPLICATION = "chatdemo.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get(
            "CHATDEMO_DB",
            os.path.join(tempfile.gettempdir(), "channelgate-chatdemo.sqlite3"),
        ),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CHANNELGATE_ADMIN = os.environ.get("CHANNELGATE_ADMIN", "http://127.0.0.1:9100")

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False

TEMPLATES = []

# With DEBUG off Django's default logging shows nothing on the console; send warnings and
# errors (tracebacks of 500s included) to stderr, next to gunicorn's own log.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "plain",
        },
    },
    "root": {"handlers": ["stderr"], "level": "WARNING"},
    "loggers": {
        "django": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}
