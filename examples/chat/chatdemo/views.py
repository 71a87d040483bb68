"""The chat demo's three views; everything live goes through channelgate.

GET  /          the chat page (inline CSS and JS). Its WebSocket goes to
                /ws/chat/<room>/, which channelgate terminates itself: frames a browser
                sends are broadcast by channelgate to group "chat-<room>"; nothing here
                sees them.
POST /announce/ form fields room, text (CSRF-protected like any Django form post):
                publishes {"type": "chat.message", "text": '{"user": "server", "text": ...}'}
                to group "chat-<room>" with channelgate.publish (the repository's Python
                package) and answers with channelgate's answer ({"group", "delivered"})
                or its error and status.
GET  /healthz   "ok"
"""
import json
import re

import channelgate
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.utils.html import escape
from django.views.decorators.http import require_GET, require_POST

# The group is "chat-<room>"; channelgate's group names match ^[a-zA-Z0-9\-_.]+$ and are
# shorter than 100 characters, so a room has at most 94. Used with fullmatch.
ROOM_RE = re.compile(r"[a-zA-Z0-9_.\-]{1,94}")
MAX_TEXT = 4000


@require_GET
def healthz(request):
    return HttpResponse("ok", content_type="text/plain")


@require_GET
def index(request):
    # get_token also sets the csrftoken cookie that /announce/ checks against.
    html = PAGE.replace("__CSRF_TOKEN__", escape(get_token(request)))
    return HttpResponse(html, content_type="text/html; charset=utf-8")


@require_POST
def announce(request):
    room = request.POST.get("room", "")
    text = request.POST.get("text", "")
    if not ROOM_RE.fullmatch(room):
        return JsonResponse({"error": "room must be 1-94 of A-Z a-z 0-9 _ . -"}, status=400)
    if not text.strip() or len(text) > MAX_TEXT:
        return JsonResponse({"error": f"text must be 1-{MAX_TEXT} characters"}, status=400)
    event = {"type": "chat.message", "text": json.dumps({"user": "server", "text": text})}
    # The channelgate package (python/ in the repository): one call, with
    # CHANNELGATE_PUBLISH_TOKEN from the settings or the environment when set.
    try:
        answer = channelgate.publish(f"chat-{room}", event, admin=settings.CHANNELGATE_ADMIN)
    except channelgate.PublishError as e:
        return JsonResponse({"error": e.message}, status=e.status or 502)
    return JsonResponse(answer)


PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="__CSRF_TOKEN__">
<title>channelgate chat demo</title>
<style>
  * { box-sizing: border-box; }
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 46rem; padding: 1rem; color: #222; }
  h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
  p.hint { margin: 0 0 .8rem; color: #666; font-size: .9rem; }
  form { display: flex; gap: .5rem; margin: .5rem 0; }
  input[type=text] { flex: 1; padding: .4rem; font: inherit; }
  button { padding: .4rem .8rem; font: inherit; cursor: pointer; }
  #state { display: inline-block; padding: .15rem .5rem; border-radius: .3rem; font-size: .9rem; }
  #state.connecting { background: #fff3c4; }
  #state.open { background: #cdf2cf; }
  #state.closed { background: #f8d0d0; }
  #log { list-style: none; margin: .5rem 0; padding: .5rem; height: 22rem; overflow-y: auto;
         border: 1px solid #ccc; border-radius: .3rem; background: #fafafa; }
  #log li { padding: .1rem 0; white-space: pre-wrap; word-break: break-word; }
  #log li.info { color: #777; font-style: italic; }
  #log li.server { color: #0a5; }
  #log li.mine { color: #036; }
  .who { font-weight: 600; }
</style>
</head>
<body>
<h1>channelgate chat demo</h1>
<p class="hint">Plain WSGI Django behind channelgate: the WebSocket is channelgate's,
"send from the server" is an ordinary Django view that publishes over HTTP.
Open two tabs on the same room. You are <b id="me"></b>.</p>

<form id="room-form">
  <label for="room">Room</label>
  <input type="text" id="room" value="lobby" maxlength="94" autocomplete="off">
  <button type="submit">Join</button>
</form>
<div>State: <span id="state" class="connecting">connecting</span></div>

<ul id="log" aria-live="polite"></ul>

<form id="msg-form">
  <input type="text" id="msg" placeholder="Type a message" autocomplete="off" maxlength="4000">
  <button type="submit">Send</button>
  <button type="button" id="announce">Send from the server</button>
</form>

<script>
(function () {
  "use strict";

  var ROOM_RE = /^[A-Za-z0-9_.\-]{1,94}$/;
  var RECONNECT_MS = 2000;
  var me = "guest-" + Math.random().toString(36).slice(2, 6);
  var csrfToken = document.querySelector('meta[name="csrf-token"]').content;

  var roomInput = document.getElementById("room");
  var msgInput = document.getElementById("msg");
  var stateEl = document.getElementById("state");
  var logEl = document.getElementById("log");

  var ws = null;          // the current socket; older sockets' events are ignored
  var room = null;        // the room of the current socket
  var reconnectTimer = null;
  var nextId = 1;
  var pending = {};       // ids of my messages, to drop channelgate's echo of them

  document.getElementById("me").textContent = me;

  function setState(text, cls) {
    stateEl.textContent = text;
    stateEl.className = cls;
  }

  // Everything shown goes through textContent: messages are never parsed as HTML.
  function log(who, text, cls) {
    var li = document.createElement("li");
    if (cls) li.className = cls;
    if (who !== null) {
      var b = document.createElement("span");
      b.className = "who";
      b.textContent = who + ": ";
      li.appendChild(b);
    }
    li.appendChild(document.createTextNode(text));
    var atBottom = logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - 5;
    logEl.appendChild(li);
    if (atBottom) logEl.scrollTop = logEl.scrollHeight;
    return li;
  }

  function info(text) { log(null, text, "info"); }

  // A frame is JSON {"user": ..., "text": ...} (from browsers and from /announce/) or
  // any other text, shown as it is.
  function show(data) {
    var msg = null;
    try { msg = JSON.parse(data); } catch (e) { msg = null; }
    if (msg === null || typeof msg !== "object" || typeof msg.text !== "string") {
      log(null, data, "");
      return;
    }
    var user = msg.user === undefined || msg.user === null ? "?" : String(msg.user);
    if (user === me && typeof msg.id === "number" && pending[msg.id]) {
      // The group includes this tab, so my own message may come back: already shown.
      delete pending[msg.id];
      return;
    }
    log(user, msg.text, user === "server" ? "server" : "");
  }

  // Opens the socket for `room`; reconnects reuse it, only "Join" changes it.
  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
      "/ws/chat/" + room + "/";
    setState("connecting to " + room, "connecting");
    var sock;
    try {
      sock = new WebSocket(url);
    } catch (e) {
      setState("cannot connect: " + e.message, "closed");
      return;
    }
    ws = sock;
    sock.onopen = function () {
      if (sock !== ws) return;
      setState("open (room " + room + ")", "open");
      info("connected to room " + room);
    };
    sock.onmessage = function (ev) {
      if (sock !== ws) return;
      if (typeof ev.data === "string") show(ev.data);
      else info("(binary frame ignored)");
    };
    sock.onclose = function (ev) {
      if (sock !== ws) return;  // closed on purpose after a room change
      ws = null;
      setState("closed (code " + ev.code + (ev.reason ? ": " + ev.reason : "") +
        "), reconnecting in " + RECONNECT_MS / 1000 + " s", "closed");
      reconnectTimer = setTimeout(connect, RECONNECT_MS);
    };
    // onerror is always followed by onclose, which reports and reconnects.
  }

  function switchRoom() {
    var wanted = roomInput.value.trim() || "lobby";
    if (!ROOM_RE.test(wanted)) {
      info("invalid room name \"" + wanted + "\" (use 1-94 of A-Z a-z 0-9 _ . -)");
      return;
    }
    var old = ws;
    ws = null;
    if (old) old.close(1000, "room change");
    logEl.textContent = "";
    pending = {};
    room = wanted;
    connect();
  }

  document.getElementById("room-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    switchRoom();
  });

  document.getElementById("msg-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = msgInput.value;
    if (!text.trim()) return;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      info("not connected; message not sent");
      return;
    }
    var id = nextId++;
    ws.send(JSON.stringify({ user: me, text: text, id: id }));
    pending[id] = true;
    log(me, text, "mine");
    msgInput.value = "";
    msgInput.focus();
  });

  document.getElementById("announce").addEventListener("click", function () {
    var text = msgInput.value;
    if (!text.trim()) { info("type a message first"); return; }
    var body = new URLSearchParams();
    body.set("room", room);
    body.set("text", text);
    fetch("/announce/", {
      method: "POST",
      headers: { "X-CSRFToken": csrfToken },
      body: body,
      credentials: "same-origin"
    }).then(function (resp) {
      return resp.text().then(function (t) {
        var detail = t;
        try {
          var j = JSON.parse(t);
          if (typeof j.delivered === "number") detail = "delivered to " + j.delivered + " connection(s)";
          else if (j.error) detail = j.error;
        } catch (e) { detail = t.slice(0, 200); }
        info("/announce/ -> HTTP " + resp.status + ": " + detail);
        if (resp.ok) msgInput.value = "";
      });
    }).catch(function (e) {
      info("/announce/ failed: " + e);
    });
  });

  switchRoom();
})();
</script>
</body>
</html>
"""
