"""A TCP proxy on 127.0.0.1 that can add latency or refuse connections, for bench/chaos.py.

    python bench/delay_proxy.py LISTEN_PORT TARGET_PORT

Forwards 127.0.0.1:LISTEN_PORT to 127.0.0.1:TARGET_PORT. Commands, one per line on stdin:
`delay SECONDS` (each chunk is held that long in each direction, order kept; 0 turns it off),
`close` (stop listening and cut every proxied connection: clients get "connection refused", as
from a dead server), `open` (listen again). Each command is answered with `ok` on stdout; the
first line, once listening, is `ready`. EOF on stdin stops it. Standard library only.
"""

from __future__ import annotations

import asyncio
import sys

state = {"delay": 0.0}
connections: set[asyncio.StreamWriter] = set()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def sender() -> None:
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    task = asyncio.create_task(sender())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + state["delay"], data))
        queue.put_nowait((0.0, None))
        await task
    except (ConnectionError, OSError):
        pass
    finally:
        task.cancel()
        writer.close()


async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter, target: int) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        client_writer.close()
        return
    connections.update((client_writer, upstream_writer))
    try:
        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))
    except asyncio.CancelledError:  # stopping
        pass
    finally:
        connections.difference_update((client_writer, upstream_writer))


async def main(listen: int, target: int) -> None:
    loop = asyncio.get_running_loop()

    async def serve() -> asyncio.Server:
        return await asyncio.start_server(lambda r, w: handle(r, w, target), "127.0.0.1", listen, reuse_address=True)

    server: asyncio.Server | None = await serve()
    print("ready", flush=True)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := (await stdin.readline()).decode().strip():
        command, _, arg = line.partition(" ")
        if command == "delay":
            state["delay"] = float(arg)
        elif command == "close" and server is not None:
            server.close()
            for writer in list(connections):
                transport = writer.transport
                transport.abort()  # a reset, as when the server's process dies
            await server.wait_closed()
            server = None
        elif command == "open" and server is None:
            server = await serve()
        print("ok", flush=True)
    if server is not None:
        server.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
