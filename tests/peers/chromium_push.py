"""Drives headless Chromium over the DevTools protocol (CDP) for tests/chromium.rs.

    chromium_push.py DEVTOOLS_WS PAGE_URL ADMIN_URL GROUP TEXT SCREENSHOT_PNG

Loads PAGE_URL, waits until the page's WebSocket is open, publishes TEXT to GROUP
through channelgate's admin POST /publish/{GROUP} (as the demo's /announce/ view does),
waits until the page shows it, saves a PNG screenshot and prints one JSON line:
{"document_protocol", "document_status", "websocket_urls", "websocket_status",
 "delivered", "shown", "security_state"} (the document response's securityState:
"secure" when its certificate chain was trusted). Every wait has a generous limit; on a timeout
the script exits 1 with the page's text on stderr.
"""

import asyncio
import base64
import json
import sys
import time
import urllib.request

import websockets

LIMIT_S = 60


class Cdp:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.events = []          # every event received, in order
        self.replies = {}

    async def call(self, method, session=None, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        await self.ws.send(json.dumps(msg))
        my_id = self.next_id
        while my_id not in self.replies:
            await self.pump()
        reply = self.replies.pop(my_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def pump(self):
        raw = await asyncio.wait_for(self.ws.recv(), LIMIT_S)
        msg = json.loads(raw)
        if "id" in msg:
            self.replies[msg["id"]] = msg
        else:
            self.events.append(msg)

    async def until(self, what, check):
        """Pumps events until check() is true (polled after each event and each 0.25 s)."""
        deadline = time.monotonic() + LIMIT_S
        while not await check():
            if time.monotonic() > deadline:
                raise TimeoutError(what)
            try:
                await asyncio.wait_for(self.pump(), 0.25)
            except asyncio.TimeoutError:
                pass


async def main(devtools, page_url, admin, group, text, png):
    async with websockets.connect(devtools, max_size=None, open_timeout=LIMIT_S) as ws:
        cdp = Cdp(ws)
        target = await cdp.call("Target.createTarget", url="about:blank")
        attached = await cdp.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)
        s = attached["sessionId"]
        await cdp.call("Network.enable", s)
        await cdp.call("Page.enable", s)
        await cdp.call("Emulation.setDeviceMetricsOverride", s,
                       width=760, height=340, deviceScaleFactor=1, mobile=False)
        await cdp.call("Page.navigate", s, url=page_url)

        async def evaluate(expr):
            r = await cdp.call("Runtime.evaluate", s, expression=expr, returnByValue=True)
            return r.get("result", {}).get("value")

        async def ws_open():
            return (await evaluate("document.getElementById('state') && "
                                   "document.getElementById('state').className")) == "open"

        try:
            await cdp.until("the page's WebSocket to open", ws_open)
            body = json.dumps({"type": "chat.message",
                               "text": json.dumps({"user": "server", "text": text})}).encode()
            req = urllib.request.Request(f"{admin}/publish/{group}", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(req, timeout=LIMIT_S) as resp:
                delivered = json.loads(resp.read()).get("delivered")

            async def shown():
                return text in (await evaluate("document.getElementById('log').innerText") or "")

            await cdp.until("the pushed message on the page", shown)
        except TimeoutError as e:
            page = await evaluate("document.body ? document.body.innerText : ''")
            print(f"timed out waiting for {e}; page text:\n{page}", file=sys.stderr)
            sys.exit(1)

        shot = await cdp.call("Page.captureScreenshot", s, format="png")
        with open(png, "wb") as f:
            f.write(base64.b64decode(shot["data"]))

        doc = [e["params"]["response"] for e in cdp.events
               if e.get("method") == "Network.responseReceived"
               and e["params"].get("type") == "Document"]
        ws_urls = [e["params"]["url"] for e in cdp.events
                   if e.get("method") == "Network.webSocketCreated"]
        ws_resp = [e["params"]["response"]["status"] for e in cdp.events
                   if e.get("method") == "Network.webSocketHandshakeResponseReceived"]
        print(json.dumps({
            "document_protocol": doc[0].get("protocol") if doc else None,
            "document_status": doc[0].get("status") if doc else None,
            "websocket_urls": ws_urls,
            "websocket_status": ws_resp,
            "delivered": delivered,
            "shown": True,
            "security_state": doc[0].get("securityState") if doc else None,
        }))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
