"""publish/send against a small HTTP server speaking channelgate's admin API shape (the
end-to-end test against channelgate itself is tests/trust.rs)."""
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

import channelgate


class Admin(BaseHTTPRequestHandler):
    seen = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Admin.seen.append((self.path, self.headers.get("Content-Type"), self.headers.get("Authorization"), body))
        if self.headers.get("Authorization") != "Bearer tok":
            self._answer(401, {"error": "missing or wrong bearer token"})
        else:
            kind, _, name = self.path[1:].partition("/")
            self._answer(200, {"group" if kind == "publish" else "channel": name, "delivered": 1})

    def _answer(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def admin():
    server = HTTPServer(("127.0.0.1", 0), Admin)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    Admin.seen.clear()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_publish_json_and_send_text(admin):
    r = channelgate.publish("updates-1", {"type": "notify.message", "text": "hi"}, admin=admin, token="tok")
    assert r == {"group": "updates-1", "delivered": 1}
    r = channelgate.send("specific.a!b", "hello", admin=admin, token="tok")
    assert r["delivered"] == 1
    assert Admin.seen[0][:3] == ("/publish/updates-1", "application/json", "Bearer tok")
    assert json.loads(Admin.seen[0][3]) == {"type": "notify.message", "text": "hi"}
    assert Admin.seen[1][0] == "/send/specific.a%21b"
    assert Admin.seen[1][1].startswith("text/plain")


def test_errors_carry_status_and_message(admin):
    with pytest.raises(channelgate.PublishError) as e:
        channelgate.publish("g", "x", admin=admin, token="wrong")
    assert e.value.status == 401 and "bearer" in e.value.message
    with pytest.raises(channelgate.PublishError) as e:
        channelgate.publish("g", "x", admin="http://127.0.0.1:1")
    assert e.value.status == 0
    with pytest.raises(TypeError):
        channelgate.publish("g", 5, admin=admin)


def test_env_defaults(admin, monkeypatch):
    monkeypatch.setenv("CHANNELGATE_ADMIN", admin)
    monkeypatch.setenv("CHANNELGATE_PUBLISH_TOKEN", "tok")
    assert channelgate.publish("g", "x")["delivered"] == 1
