"""Checks channelgate's compressed answers the way a client sees them, with Python's own
decoders (zlib, zstandard, brotli): not with the encoder channelgate uses.

compare --proxy HOST:PORT --upstream HOST:PORT --path P --accept A
    GET P through channelgate with Accept-Encoding: A and straight from the app with
    Accept-Encoding: identity; decodes channelgate's body per its Content-Encoding and
    prints JSON {status, encoding, vary, etag, upstream_etag, wire_len, equal, plain_len}.
    Every compressed stream must also be complete (gzip, zstd and brotli end markers).
gated --proxy HOST:PORT --path P --accept A --dir D --chunks N
    GET P (the app's /stream-gated/ view) and decodes the body as it arrives; after each
    whole line i it creates D/ack-i, which the view waits for before it sends line i+1.
    Prints JSON {lines, encoding}.
"""
import argparse
import http.client
import json
import os
import sys
import zlib

import brotli
import zstandard


def decoder(encoding):
    if encoding == "gzip":
        d = zlib.decompressobj(wbits=31)
        return d.decompress, lambda: d.flush() if d.eof else sys.exit("gzip stream not finished")
    if encoding == "zstd":
        d = zstandard.ZstdDecompressor().decompressobj()
        return d.decompress, lambda: b"" if d.eof else sys.exit("zstd stream not finished")
    if encoding == "br":
        d = brotli.Decompressor()
        return d.process, lambda: b"" if d.is_finished() else sys.exit("brotli stream not finished")
    if encoding in (None, "identity"):
        return (lambda b: b), (lambda: b"")
    sys.exit("unknown encoding %r" % encoding)


def get(addr, path, accept):
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=120)
    c.request("GET", path, headers={"Accept-Encoding": accept})
    return c, c.getresponse()


def compare(a):
    _, r = get(a.proxy, a.path, a.accept)
    wire = r.read()
    enc = r.getheader("Content-Encoding")
    feed, end = decoder(enc)
    plain = feed(wire) + end()
    _, u = get(a.upstream, a.path, "identity")
    expected = u.read()
    print(json.dumps({
        "status": r.status,
        "encoding": enc,
        "vary": r.getheader("Vary"),
        "etag": r.getheader("ETag"),
        "upstream_etag": u.getheader("ETag"),
        "wire_len": len(wire),
        "plain_len": len(plain),
        "equal": plain == expected,
    }))


def gated(a):
    _, r = get(a.proxy, a.path, a.accept)
    enc = r.getheader("Content-Encoding")
    feed, end = decoder(enc)
    text = b""
    lines = 0
    while True:
        chunk = r.read1(65536)
        if not chunk:
            break
        text += feed(chunk)
        while text.count(b"\n") > lines:
            open(os.path.join(a.dir, "ack-%d" % lines), "w").close()
            lines += 1
    text += end()
    print(json.dumps({"lines": text.count(b"\n"), "acked": lines, "encoding": enc}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["compare", "gated"])
    p.add_argument("--proxy", required=True)
    p.add_argument("--upstream")
    p.add_argument("--path", required=True)
    p.add_argument("--accept", default="identity")
    p.add_argument("--dir")
    p.add_argument("--chunks", type=int, default=3)
    a = p.parse_args()
    compare(a) if a.mode == "compare" else gated(a)


if __name__ == "__main__":
    main()
