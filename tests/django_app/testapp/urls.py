from django.urls import path, re_path

from . import views

# APPEND_SLASH is off; every pattern accepts the path with or without its
# trailing slash so tests are not surprised by 301s or 404s.
urlpatterns = [
    re_path(r"^healthz/?$", views.healthz),
    re_path(r"^headers(?:/.*)?$", views.headers),
    re_path(r"^upload(?:/.*)?$", views.upload),  # curl -T f URL/ appends the file name
    re_path(r"^download/?$", views.download),
    re_path(r"^slow/?$", views.slow),
    re_path(r"^status/(?P<code>[0-9]+)/?$", views.status),
    re_path(r"^whoami/?$", views.whoami),
    re_path(r"^accounts/login/?$", views.login_view),
    re_path(r"^ws-auth/?$", views.ws_auth),
]
