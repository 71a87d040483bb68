#!/usr/bin/env python3
"""The GRIP backend behind Pushpin in the fan-out and idle benchmarks (standard library only).

    pushpin_backend.py PORT [--ready-file FILE]

Pushpin's route `* 127.0.0.1:PORT,over_http` turns each client WebSocket into
WebSocket-over-HTTP requests to this server: a POST with `Content-Type:
application/websocket-events` whose body is a list of events, each
`TYPE\\r\\n` or `TYPE <hex length>\\r\\n<content>\\r\\n`. It answers

- `OPEN` (a client connected to /ws/<group>/) with `OPEN` plus a GRIP control message
  `TEXT` `c:{"type": "subscribe", "channel": "<group>"}` and
  `Sec-WebSocket-Extensions: grip`, so Pushpin accepts the WebSocket and subscribes it
  to the group's channel; what is published to the channel then goes to the client
  without this server;
- `CLOSE` with `CLOSE` (same code), `DISCONNECT` with `DISCONNECT`;
- anything else (`TEXT`, `BINARY`, `PING`, `PONG` from clients) with nothing.

It keeps no state per connection: channelgate's `[[ws]] path = "/ws/{g}/"`,
`groups = ["{g}"]` route does the same with no backend. Listens on 127.0.0.1 only;
one thread per backend connection (Pushpin reaches it through zurl).

`GET /stats` answers the number of events answered so far, as JSON
(`{"OPEN": n, "CLOSE": n, "DISCONNECT": n, ...}`): the benchmark scripts wait until
every WebSocket of a scenario was closed towards the backend before the next one.
"""
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GROUP_RE = re.compile(r"^/ws/([A-Za-z0-9._-]{1,99})/?(?:\?.*)?$")
COUNTS = {}
COUNTS_LOCK = threading.Lock()


def parse_events(body):
    """[(type, content or None)] of a WebSocket-over-HTTP body (bytes)."""
    out, i = [], 0
    while i < len(body):
        j = body.find(b"\r\n", i)
        if j < 0:
            raise ValueError("event line without CRLF")
        line = body[i:j].decode("ascii")
        i = j + 2
        etype, _, hexlen = line.partition(" ")
        if hexlen:
            n = int(hexlen, 16)
            content = body[i:i + n]
            if len(content) != n or body[i + n:i + n + 2] != b"\r\n":
                raise ValueError("short event content")
            i += n + 2
            out.append((etype, content))
        else:
            out.append((etype, None))
    return out


def event(etype, content=None):
    if content is None:
        return etype.encode("ascii") + b"\r\n"
    return b"%s %x\r\n%s\r\n" % (etype.encode("ascii"), len(content), content)


def answer(path, events):
    """The response body for the events of one request to `path`."""
    out = []
    for etype, content in events:
        if etype == "OPEN":
            m = GROUP_RE.match(path)
            if not m:
                return None
            sub = json.dumps({"type": "subscribe", "channel": m.group(1)}, separators=(",", ":"))
            out += [event("OPEN"), event("TEXT", b"c:" + sub.encode())]
        elif etype == "CLOSE":
            out.append(event("CLOSE", content))
        elif etype == "DISCONNECT":
            out.append(event("DISCONNECT"))
    return b"".join(out)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive towards zurl

    def do_POST(self):  # noqa: N802 - http.server's name
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n > 0 else b""
        if not self.headers.get("Content-Type", "").startswith("application/websocket-events"):
            return self.reply(400, b"not a WebSocket-over-HTTP request\n", "text/plain")
        try:
            events = parse_events(body)
            out = answer(self.path, events)
        except (ValueError, UnicodeDecodeError) as e:
            return self.reply(400, f"bad events: {e}\n".encode(), "text/plain")
        with COUNTS_LOCK:
            for etype, _ in events:
                COUNTS[etype] = COUNTS.get(etype, 0) + 1
        if out is None:
            return self.reply(404, b"no group in the path (/ws/<group>/)\n", "text/plain")
        self.reply(200, out, "application/websocket-events", grip=True)

    def do_GET(self):  # noqa: N802
        if self.path != "/stats":
            return self.reply(404, b"POST WebSocket-over-HTTP events, or GET /stats\n", "text/plain")
        with COUNTS_LOCK:
            body = json.dumps(COUNTS, sort_keys=True).encode() + b"\n"
        self.reply(200, body, "application/json")

    def reply(self, code, body, ctype, grip=False):
        # Head and body in one write: a response split over two TCP segments reaches
        # pushpin's proxy (through zurl) as two packets, and under load some of those
        # WebSocket-over-HTTP answers ended as a 502 to the client.
        head = [f"HTTP/1.1 {code} {'OK' if code == 200 else 'Error'}", f"Content-Type: {ctype}",
                f"Content-Length: {len(body)}"]
        if grip:
            head.append("Sec-WebSocket-Extensions: grip")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body)

    def log_message(self, fmt, *args):  # no access log; errors still reach stderr
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 4096  # the listen backlog: Pushpin opens thousands of sessions at once


def main(argv):
    if len(argv) < 2 or not argv[1].isdigit():
        print(__doc__, file=sys.stderr)
        return 2
    srv = Server(("127.0.0.1", int(argv[1])), Handler)
    if len(argv) > 3 and argv[2] == "--ready-file":
        with open(argv[3], "w") as f:
            f.write(f"{srv.server_address[1]}\n")
    threading.current_thread().name = "pushpin-backend"
    try:
        srv.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
