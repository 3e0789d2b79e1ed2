"""The pods' way to the host's loopback servers (API server, MinIO): a TCP relay listening on the
CNI bridge's gateway address, forwarding each port to the same port on 127.0.0.1.

Pods cannot reach 127.0.0.1 of the host, and the control plane listens nowhere else. The API
server advertises the gateway address, so the ``kubernetes`` Service (10.96.0.1) leads here and
in-cluster clients (the operator pod) work unchanged.

    python -m ridgeline_dev.gateway 10.85.0.1 PORT [PORT ...]
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def _relay(port: int) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return handle


async def serve(address: str, ports: list[int]) -> None:
    servers = [await asyncio.start_server(_relay(port), address, port) for port in ports]
    print(f"relaying {address}:{ports} to 127.0.0.1", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main() -> int:
    address, *ports = sys.argv[1:]
    asyncio.run(serve(address, [int(p) for p in ports]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
