#!/usr/bin/env python3
"""A real sdss-clu AMQPActor on the local RabbitMQ, for the amqp-bridge test.

    clu_actor.py --name testactor [--url amqp://guest:guest@127.0.0.1:5672/]

It has CLU's built-in commands (ping answers "Pong.") and prints READY once its
command queue is bound."""
import argparse
import asyncio

from clu import AMQPActor


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    a = p.parse_args()
    actor = AMQPActor(name=a.name, url=a.url, version="1.0.0")
    await actor.start()
    print("READY", flush=True)
    try:
        await asyncio.wait_for(actor.run_forever(), timeout=600)
    except asyncio.TimeoutError:
        pass
    finally:
        await actor.stop()


if __name__ == "__main__":
    asyncio.run(main())
