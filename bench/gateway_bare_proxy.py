#!/usr/bin/env python3
"""Calibration for bench/gateway_bench.py: the cheapest possible Python proxy on this machine.

    .venv/bin/python bench/gateway_bare_proxy.py LISTEN_PORT UPSTREAM_HOST:PORT

uvloop + asyncio.Protocol, one upstream connection per client connection, bytes forwarded
untouched (no parsing, no routing, no headers): the ceiling any Python data path can reach
here. The real gateway's distance to this ceiling is the cost of its features.
"""

import asyncio
import sys

import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, client):
        self.client = client

    def data_received(self, data):
        self.client.transport.write(data)

    def connection_lost(self, exc):
        self.client.transport.close()


class Client(asyncio.Protocol):
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.up = None
        self.pending = []

    def connection_made(self, transport):
        self.transport = transport
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self):
        loop = asyncio.get_running_loop()
        t, _ = await loop.create_connection(lambda: Upstream(self), self.host, self.port)
        self.up = t
        for d in self.pending:
            t.write(d)

    def data_received(self, data):
        if self.up is None:
            self.pending.append(data)
        else:
            self.up.write(data)

    def connection_lost(self, exc):
        if self.up is not None:
            self.up.close()


def main():
    port = int(sys.argv[1])
    host, _, up_port = sys.argv[2].rpartition(":")
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(loop.create_server(lambda: Client(host, int(up_port)), "127.0.0.1", port, backlog=4096))
    loop.run_forever()


if __name__ == "__main__":
    main()
