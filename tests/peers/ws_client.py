#!/usr/bin/env python3
"""Small WebSocket client for channelgate's end-to-end tests.

    ws_client.py ws://127.0.0.1:8080/path [--header K:V]... [--origin O]
                 [--send TEXT]... [--send-binary TEXT]... [--send-file PATH]...
                 [--expect N]
                 [--wait-close] [--subprotocol P]... [--unix PATH]
                 [--timeout SECONDS] [--show-handshake]

Connects, sends the messages in the order given (--send as text frames,
--send-binary as the UTF-8 bytes of TEXT in binary frames, --send-file as the
file's bytes in one binary frame; all --send, then all --send-binary, then all
--send-file), then reads messages. Each received message is printed as
one JSON line:
    {"type": "text", "data": "..."}
    {"type": "binary", "data": "<bytes decoded as UTF-8, invalid bytes replaced>", "b64": "..."}
After --expect messages (default: as many as were sent) it closes with 1000,
unless --wait-close is given, in which case it waits for the peer to close.
It always ends with one line
    {"close": <code received from the peer, or 1006 if none>, "reason": "..."}
and exits 0.

With --show-handshake, a first line
    {"open": true, "status": 101, "subprotocol": ..., "headers": {...}}
describes the handshake response.

Failures (each prints one JSON line, then exits non-zero):
    {"error": "handshake", "status": 403, "headers": {...}, "body": "..."}  exit 3
    {"error": "timeout", "stage": "connect"|"recv"|"close"}                     exit 4
    {"error": "connect", "detail": "..."}                                       exit 5
--timeout (default 10 s) bounds the whole run, so it never hangs.
"""
import argparse
import base64
import json
import sys
import time

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect, unix_connect


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def headers_dict(headers):
    out = {}
    for name, value in headers.raw_items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def print_message(msg):
    if isinstance(msg, str):
        emit({"type": "text", "data": msg})
    else:
        emit(
            {
                "type": "binary",
                "data": msg.decode("utf-8", errors="replace"),
                "b64": base64.b64encode(msg).decode("ascii"),
            }
        )


def print_close(ws):
    rcvd = ws.protocol.close_rcvd
    if rcvd is not None:
        emit({"close": int(rcvd.code), "reason": rcvd.reason})
    else:
        emit({"close": 1006, "reason": ""})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="ws:// URL (with --unix, only its path and Host matter)")
    p.add_argument("--header", action="append", default=[], metavar="K:V")
    p.add_argument("--origin")
    p.add_argument("--subprotocol", action="append", default=[])
    p.add_argument("--send", action="append", default=[], metavar="TEXT")
    p.add_argument("--send-binary", action="append", default=[], metavar="TEXT")
    p.add_argument("--send-file", action="append", default=[], metavar="PATH",
                   help="send the file's bytes as one binary message (for large messages)")
    p.add_argument("--expect", type=int, default=None, help="messages to read before closing")
    p.add_argument("--wait-close", action="store_true", help="after --expect messages, wait for the peer to close")
    p.add_argument("--unix", help="connect through this Unix socket")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--show-handshake", action="store_true")
    p.add_argument("--no-compression", action="store_true")
    args = p.parse_args()

    deadline = time.monotonic() + args.timeout

    def remaining():
        return max(deadline - time.monotonic(), 0.01)

    headers = []
    for h in args.header:
        k, sep, v = h.partition(":")
        if not sep:
            p.error(f"--header needs K:V, got {h!r}")
        headers.append((k.strip(), v.strip()))

    kwargs = dict(
        additional_headers=headers,
        origin=args.origin,
        subprotocols=args.subprotocol or None,
        open_timeout=remaining(),
        close_timeout=min(2.0, remaining()),
        max_size=None,
        compression=None if args.no_compression else "deflate",
    )
    try:
        if args.unix:
            ws = unix_connect(args.unix, args.url, **kwargs)
        else:
            ws = connect(args.url, **kwargs)
    except InvalidStatus as e:
        r = e.response
        emit(
            {
                "error": "handshake",
                "status": r.status_code,
                "headers": headers_dict(r.headers),
                "body": (r.body or b"").decode("utf-8", errors="replace"),
            }
        )
        return 3
    except TimeoutError:
        emit({"error": "timeout", "stage": "connect"})
        return 4
    except Exception as e:  # refused, reset, bad handshake, ...
        emit({"error": "connect", "detail": f"{type(e).__name__}: {e}"})
        return 5

    with ws:
        if args.show_handshake:
            emit(
                {
                    "open": True,
                    "status": ws.response.status_code,
                    "subprotocol": ws.subprotocol,
                    "headers": headers_dict(ws.response.headers),
                }
            )
        expect = args.expect
        if expect is None:
            expect = len(args.send) + len(args.send_binary) + len(args.send_file)
        try:
            for text in args.send:
                ws.send(text)
            for text in args.send_binary:
                ws.send(text.encode("utf-8"))
            for path in args.send_file:
                with open(path, "rb") as f:
                    ws.send(f.read())
            got = 0
            while got < expect or args.wait_close:
                try:
                    msg = ws.recv(timeout=remaining())
                except TimeoutError:
                    emit({"error": "timeout", "stage": "recv"})
                    return 4
                print_message(msg)
                got += 1
            ws.close(1000)
        except ConnectionClosed:
            pass
        print_close(ws)
    return 0


if __name__ == "__main__":
    sys.exit(main())
