#!/usr/bin/env python3
"""Publish to a Django Channels group over RabbitMQ the way a Celery task does when it
cannot use channels_rabbitmq's async group_send: the msgpack body
{**message, "__asgi_group__": group} on exchange "groups", routing key = group, no
properties (the channels_rabbitmq README recipe), with plain pika.

    amqp_publish.py --group G --text T [--type x.y] [--count N]
    amqp_publish.py --group G --raw-hex HEX [--content-type CT]     # any body, for garbage tests
    amqp_publish.py --group G --raw-size N                          # N bytes of 0xc1 (never msgpack)
    amqp_publish.py --group G --json '{"type": ..., "text": ...}'   # JSON body, application/json
"""
import argparse
import json
import sys

import msgpack
import pika


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    p.add_argument("--exchange", default="groups")
    p.add_argument("--group", help="a group (exchange groups) ...")
    p.add_argument("--channel", help="... or one channel (default exchange, routing key = its queue)")
    p.add_argument("--text")
    p.add_argument("--type", default="x.y")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--raw-hex")
    p.add_argument("--raw-size", type=int)
    p.add_argument("--json")
    p.add_argument("--content-type")
    a = p.parse_args()
    conn = pika.BlockingConnection(pika.URLParameters(a.url))
    ch = conn.channel()
    if not (a.group or a.channel):
        p.error("--group or --channel is required")
    # Passive: the exchange belongs to the layer (direct, non-durable); never redeclare it.
    ch.exchange_declare(a.exchange, passive=True)
    props = pika.BasicProperties(content_type=a.content_type) if a.content_type else None
    for i in range(a.count):
        if a.raw_hex is not None:
            body = bytes.fromhex(a.raw_hex)
        elif a.raw_size is not None:
            body = b"\xc1" * a.raw_size
        elif a.json is not None:
            msg = json.loads(a.json)
            msg["__asgi_group__"] = a.group
            body = json.dumps(msg).encode()
            props = pika.BasicProperties(content_type="application/json")
        else:
            text = a.text if a.count == 1 else f"{a.text} {i}"
            target = {"__asgi_channel__": a.channel} if a.channel else {"__asgi_group__": a.group}
            body = msgpack.packb({"type": a.type, "text": text, **target}, use_bin_type=True)
        if a.channel:
            # channels_rabbitmq's send(): default exchange, routing key = the channel's queue.
            ch.basic_publish("", a.channel.split("!")[0], body, properties=props)
        else:
            ch.basic_publish(a.exchange, a.group, body, properties=props)
    conn.close()
    print(f"published {a.count} to {a.channel or a.group}")


if __name__ == "__main__":
    sys.exit(main())
