"""`python manage.py prepare`: migrate quietly and create the test users.

Users: alice / "alice-pw", bob / "bob-pw" (tokens alice-token / bob-token on
/ws-auth/). Safe to run any number of times.
"""
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

USERS = (("alice", "alice-pw"), ("bob", "bob-pw"))


class Command(BaseCommand):
    help = "Migrate the test database quietly and create users alice and bob if missing."

    def handle(self, *args, **options):
        call_command("migrate", verbosity=0, interactive=False)
        User = get_user_model()
        for username, password in USERS:
            if not User.objects.filter(username=username).exists():
                User.objects.create_user(username=username, password=password)
