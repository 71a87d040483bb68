#!/usr/bin/env python3
"""Standalone WebSocket echo server for channelgate's end-to-end tests.

Stands in for an app that runs its own ASGI/WebSocket server behind the proxy.

    ws_echo_server.py --port N        # listens on 127.0.0.1:N
    ws_echo_server.py --unix PATH     # listens on a Unix socket (stale file replaced)

Prints exactly "READY" on stdout (flushed) once it is listening; logs go to
stderr. Exits cleanly on SIGTERM/SIGINT.

Behaviour:
  * any path: every text/binary message is echoed back with the same type
  * path "/_headers" (WebSocket): first sends one text message
    {"path": <request target>, "headers": {lower-case name: value, ...}}
    describing the upgrade request as received, then echoes as usual
    (lets a test see what the proxy forwarded on the upgrade)
  * the first subprotocol the client offers (Sec-WebSocket-Protocol) is selected
  * plain HTTP GET /plain (no "Upgrade: websocket") -> 200 "plain\\n"; other
    non-upgrade requests -> 426 "Upgrade Required\\n" (Connection: close)
  * no message size limit (--max-size to set one); permessage-deflate is
    offered as the library does by default (--no-compression to disable)
"""
import argparse
import asyncio
import json
import logging
import os
import signal
import stat
import sys
from http import HTTPStatus

from websockets.asyncio.server import serve, unix_serve
from websockets.exceptions import ConnectionClosed


def _headers_dict(headers):
    out = {}
    for name, value in headers.raw_items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def process_request(connection, request):
    if "websocket" in request.headers.get("Upgrade", "").lower():
        return None  # WebSocket handshake: let the library handle it
    if request.path.split("?", 1)[0] == "/plain":
        return connection.respond(HTTPStatus.OK, "plain\n")
    response = connection.respond(HTTPStatus.UPGRADE_REQUIRED, "Upgrade Required\n")
    response.headers["Upgrade"] = "websocket"
    return response


def select_subprotocol(connection, subprotocols):
    return subprotocols[0] if subprotocols else None


async def handler(ws):
    try:
        if ws.request.path.split("?", 1)[0] == "/_headers":
            await ws.send(
                json.dumps({"path": ws.request.path, "headers": _headers_dict(ws.request.headers)})
            )
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


async def main(args):
    kwargs = dict(
        process_request=process_request,
        select_subprotocol=select_subprotocol,
        max_size=args.max_size or None,
        compression=None if args.no_compression else "deflate",
    )
    if args.unix:
        try:
            if stat.S_ISSOCK(os.stat(args.unix).st_mode):
                os.unlink(args.unix)
        except FileNotFoundError:
            pass
        server_cm = unix_serve(handler, args.unix, **kwargs)
    else:
        server_cm = serve(handler, "127.0.0.1", args.port, **kwargs)

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))

    async with server_cm:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        await stop
    if args.unix:
        try:
            os.unlink(args.unix)
        except FileNotFoundError:
            pass


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int, help="listen on 127.0.0.1:PORT")
    where.add_argument("--unix", help="listen on this Unix socket path")
    p.add_argument("--max-size", type=int, default=0, help="max message size in bytes (0 = unlimited)")
    p.add_argument("--no-compression", action="store_true", help="do not negotiate permessage-deflate")
    p.add_argument("--verbose", action="store_true", help="log connections to stderr")
    args = p.parse_args()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if args.verbose else logging.WARNING,
        format="ws_echo_server: %(levelname)s %(message)s",
    )
    asyncio.run(main(args))
