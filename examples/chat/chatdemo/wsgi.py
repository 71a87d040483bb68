"""WSGI entry point: gunicorn --chdir examples/chat chatdemo.wsgi:application"""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatdemo.settings")

application = get_wsgi_application()
