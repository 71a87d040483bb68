from django.urls import path, re_path

from . import files_views, hook_views, seed_views, views

# APPEND_SLASH is off; every pattern accepts the path with or without its
# trailing slash so tests are not surprised by 301s or 404s.
urlpatterns = [
    re_path(r"^healthz/?$", views.healthz),
    re_path(r"^headers(?:/.*)?$", views.headers),
    re_path(r"^upload(?:/.*)?$", views.upload),  # curl -T f URL/ appends the file name
    re_path(r"^download/?$", views.download),
    re_path(r"^slow/?$", views.slow),
    re_path(r"^events/?$", views.events),
    re_path(r"^status/(?P<code>[0-9]+)/?$", views.status),
    re_path(r"^whoami/?$", views.whoami),
    re_path(r"^accounts/login/?$", views.login_view),
    re_path(r"^ws-auth/?$", views.ws_auth),
    re_path(r"^ws-auth-slow/?$", views.ws_auth_slow),
    re_path(r"^ws-auth-error/?$", views.ws_auth_error),
    re_path(r"^ws-auth-headers/?$", views.ws_auth_headers),
    re_path(r"^notify/?$", views.notify),
    re_path(r"^notify-me/?$", views.notify_me),
    re_path(r"^ws/receive/?$", views.ws_receive),
    re_path(r"^hook/ws-auth/?$", hook_views.ws_auth),
    re_path(r"^hook/authorize/?$", hook_views.authorize),
    re_path(r"^hook/receive/?$", hook_views.receive),
    re_path(r"^api/v2/ping/?$", views.healthz),  # AWX's health check path (conf/examples/awx.toml)
    re_path(r"^ws/my-channel/?$", seed_views.my_channel),
    re_path(r"^awx/login/?$", seed_views.awx_login),
    re_path(r"^channels/auth/?$", seed_views.catmaid_ws_auth),
    re_path(r"^api/channelgate/ws-auth/?$", seed_views.awx_ws_auth),
    re_path(r"^api/channelgate/ws-authorize/?$", seed_views.awx_ws_authorize),
    re_path(r"^accel/(?P<path>.+)$", files_views.accel),
    re_path(r"^sendfile/(?P<path>.+)$", files_views.send),
    re_path(r"^accel-nowhere/?$", files_views.accel_nowhere),
    re_path(r"^text/?$", files_views.text),
    re_path(r"^stream-gated/?$", files_views.stream_gated),
]

# tests/ws_bounds.rs (kept apart from the list above, which every branch extends).
from . import bounds_views  # noqa: E402

urlpatterns.append(re_path(r"^ws/slow-receive/?$", bounds_views.slow_receive))
