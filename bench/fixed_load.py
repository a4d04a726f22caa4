#!/usr/bin/env python3
"""Sends exactly N GET requests over C concurrent clients and checks every
response (status 200, full body). Used by bench/callgrind.sh to measure
instructions per request, so the request count must be exact.

usage: fixed_load.py HOST:PORT PATH N [C] [close]

With `close`, every request goes on a new connection with
`Connection: close`, and the client checks that the proxy then closes it;
otherwise each client keeps one connection alive for all its requests.
"""
import asyncio
import sys


async def exchange(reader, writer, path, extra):
    req = f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: fixed-load\r\n{extra}\r\n"
    writer.write(req.encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    if status != b"200":
        raise SystemExit(f"unexpected status {status!r}")
    length = None
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    if length is None:
        raise SystemExit("response without content-length")
    await reader.readexactly(length)


async def worker(host, port, path, count, done, close):
    if close:
        for _ in range(count):
            reader, writer = await asyncio.open_connection(host, port)
            await exchange(reader, writer, path, "Connection: close\r\n")
            if await reader.read(1) != b"":
                raise SystemExit("connection not closed after Connection: close")
            writer.close()
            done[0] += 1
        return
    reader, writer = await asyncio.open_connection(host, port)
    for _ in range(count):
        await exchange(reader, writer, path, "")
        done[0] += 1
    writer.close()


async def main():
    addr, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    c = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    close = len(sys.argv) > 5 and sys.argv[5] == "close"
    host, port = addr.rsplit(":", 1)
    done = [0]
    per = [n // c + (1 if i < n % c else 0) for i in range(c)]
    await asyncio.gather(
        *(worker(host, int(port), path, k, done, close) for k in per if k)
    )
    print(done[0])


asyncio.run(main())
