"""An independent IMAP client for the load bench: what one user's mail
client sees while the bench's clients load the server.

The load clients share one asyncio process, and they send in step with the
server (a response that reaches several of them at once makes them all send
again at once), so the latency they measure includes waiting for each other
in that process. This probe is a process of its own, with INBOX selected
like a client that has the mailbox open, and sends on its own clock: every
``interval`` seconds one short command, NOOP and STATUS in turn (RFC 9051
6.1.2, 6.3.11), each read to its tagged response with blocking sockets.

Usage: python -m bench.imap_probe HOST PORT USER PASSWORD [INTERVAL]
It prints ``ready`` once logged in and selected, probes until a line
arrives on its standard input, then prints one JSON object: the latencies
in seconds, by command.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time


def _command(sock: socket.socket, reader: object, tag: bytes, line: bytes) -> bytes:
    sock.sendall(tag + b" " + line + b"\r\n")
    while True:
        got = reader.readline()  # type: ignore[attr-defined]
        if not got:
            raise ConnectionError("the server closed the connection")
        if got.startswith(tag + b" "):
            return got


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    host, port, user, password = argv[0], int(argv[1]), argv[2], argv[3]
    interval = float(argv[4]) if len(argv) > 4 else 0.005
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = sock.makefile("rb")
    reader.readline()  # the greeting
    if b" OK" not in _command(sock, reader, b"l", f'LOGIN {user} "{password}"'.encode()):
        print(json.dumps({"error": "LOGIN refused"}), flush=True)
        return 1
    _command(sock, reader, b"s", b"SELECT INBOX")
    print("ready", flush=True)
    latencies: dict[str, list[float]] = {"NOOP": [], "STATUS": []}
    lines = {"NOOP": b"NOOP", "STATUS": b"STATUS INBOX (MESSAGES UNSEEN)"}
    n = 0
    while not select.select([sys.stdin], [], [], interval)[0]:
        n += 1
        kind = "NOOP" if n % 2 else "STATUS"
        start = time.perf_counter()
        _command(sock, reader, b"p%d" % n, lines[kind])
        latencies[kind].append(time.perf_counter() - start)
    sock.sendall(b"z LOGOUT\r\n")
    sock.close()
    print(json.dumps(latencies), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
