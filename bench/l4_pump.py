#!/usr/bin/env python3
"""A bounded TCP byte pump for bench/l4.sh.

  l4_pump.py sink PORT          serve: read each connection to EOF, answer
                                with the byte count (8 bytes), close
  l4_pump.py send ADDR BYTES    send BYTES to ADDR, half-close, wait for the
                                count; print "bytes seconds"

The reply after the client's FIN makes the time cover delivery to the sink
(not just the local send buffer) and checks half-close through the proxy.
"""
import socket
import struct
import sys
import threading
import time

CHUNK = 1 << 20


def sink(port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)

    def serve(conn):
        buf = bytearray(CHUNK)
        total = 0
        try:
            while True:
                n = conn.recv_into(buf)
                if n == 0:
                    break
                total += n
            conn.sendall(struct.pack("!Q", total))
        except OSError:
            pass  # port probes and aborted runs
        finally:
            conn.close()

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def send(addr, nbytes):
    host, port = addr.rsplit(":", 1)
    data = memoryview(bytes(CHUNK))
    start = time.monotonic()
    s = socket.create_connection((host, int(port)), timeout=120)
    left = nbytes
    while left > 0:
        n = min(left, CHUNK)
        s.sendall(data[:n])
        left -= n
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while len(reply) < 8:
        part = s.recv(8 - len(reply))
        if not part:
            break
        reply += part
    elapsed = time.monotonic() - start
    got = struct.unpack("!Q", reply)[0] if len(reply) == 8 else -1
    if got != nbytes:
        sys.exit(f"sink received {got} of {nbytes} bytes")
    print(f"{nbytes} {elapsed:.6f}")


if __name__ == "__main__":
    if sys.argv[1] == "sink":
        sink(int(sys.argv[2]))
    else:
        send(sys.argv[2], int(sys.argv[3]))
