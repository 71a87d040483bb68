"""Settings for the channelgate end-to-end test app.

Environment:
  TESTAPP_NAME            identity reported by /headers/, /whoami/, /slow/ (default "app")
  TESTAPP_DB              SQLite file (default: <tempdir>/channelgate-testapp.sqlite3);
                          give each test its own file and run `manage.py prepare` first
  TESTAPP_UNHEALTHY_FILE  if this path exists, GET /healthz answers 503
  TESTAPP_PROTECTED_ROOT  the directory django-sendfile2 hands out (SENDFILE_ROOT), served
                          by channelgate's internal location /protected/
"""
import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "channelgate-test-secret-key-not-for-production-0123456789abcdef"
DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "testapp",  # for the `prepare` management command; it has no models
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

# Explicit: never redirect /foo to /foo/; the URL patterns accept both forms.
APPEND_SLASH = False
PREPEND_WWW = False

# django-sendfile2, nginx backend: views answer X-Accel-Redirect: /protected/<path>.
SENDFILE_BACKEND = "django_sendfile.backends.nginx"
SENDFILE_ROOT = os.environ.get("TESTAPP_PROTECTED_ROOT", "/nonexistent")
SENDFILE_URL = "/protected"

ROOT_URLCONF = "testapp.urls"
WSGI_APPLICATION = "testapp.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get(
            "TESTAPP_DB",
            os.path.join(tempfile.gettempdir(), "channelgate-testapp.sqlite3"),
        ),
        # gthread workers run requests on several threads; wait for locks.
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Fast hashing (logins stay ~free): the test users' passwords are not secrets.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.MD5PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]

SESSION_ENGINE = "django.contrib.sessions.backends.db"
SESSION_COOKIE_NAME = "sessionid"

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False

TEMPLATES = []

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
            "level": "WARNING",
        },
    },
    "root": {"handlers": ["stderr"], "level": "WARNING"},
    "loggers": {
        "django": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}
