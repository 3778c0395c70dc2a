"""New TCP connections per second: a connect/close loop, and the server it runs against.

Run each in its host's namespace (`LabHost.run`, `LabHost.popen`):

- ``server ADDRESS PORT --seconds T``: accepts and closes each connection at
  once, for at most T seconds. The server closes first, so TIME_WAIT stays on
  its side and the client's ports come free as soon as a connection ends.
- ``client ADDRESS PORT --count N --seconds T``: connects, waits for the
  server's FIN, closes, with `--parallel` connections under way at any time
  (non-blocking sockets, so that the figure is the path's rate of new
  connections rather than one connection's latency), until N connections or
  T seconds, whichever comes first (or `--max-failures` failed attempts);
  prints one JSON line: connections made, failures by error, seconds,
  connections per second.

A connection is the whole exchange a NAT must track: SYN, SYN-ACK, ACK, the
server's FIN, the client's FIN, their ACKs.

    python bench/tcpconns.py client 198.51.100.10 7200 --count 20000 --seconds 5
"""

from __future__ import annotations

import argparse
import errno
import json
import selectors
import socket
import time
from collections import Counter
from typing import cast


def serve(address: str, port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, port))
        listener.listen(4096)
        listener.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.close()


def connect_loop(
    address: str,
    port: int,
    *,
    count: int,
    seconds: float,
    parallel: int,
    timeout: float,
    max_failures: int,
) -> dict[str, object]:
    """Connections to `address`:`port`, `parallel` at a time (non-blocking sockets)."""
    done = 0
    failures: Counter[str] = Counter()
    started: dict[socket.socket, float] = {}
    selector = selectors.DefaultSelector()

    def finish(sock: socket.socket, failure: str | None) -> None:
        nonlocal done
        selector.unregister(sock)
        del started[sock]
        sock.close()
        if failure is None:
            done += 1
        else:
            failures[failure] += 1

    start = time.monotonic()
    deadline = start + seconds
    now = start
    try:
        while now < deadline and sum(failures.values()) < max_failures:
            while len(started) < parallel and done + len(started) < count:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                code = sock.connect_ex((address, port))
                if code not in (0, errno.EINPROGRESS):
                    sock.close()
                    failures[errno.errorcode.get(code, str(code))] += 1
                    break
                started[sock] = now
                selector.register(sock, selectors.EVENT_WRITE, "connecting")
            if not started:
                break
            for key, _ in selector.select(timeout=0.05):
                sock = cast(socket.socket, key.fileobj)
                if key.data == "connecting":
                    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if code:
                        finish(sock, errno.errorcode.get(code, str(code)))
                    else:  # connected: now the server's FIN
                        selector.modify(sock, selectors.EVENT_READ, "closing")
                    continue
                try:
                    data = sock.recv(1)
                except OSError as exc:
                    finish(sock, errno.errorcode.get(exc.errno or 0, str(exc)))
                else:
                    finish(sock, None if data == b"" else "data")
            now = time.monotonic()
            for sock, since in list(started.items()):
                if now - since > timeout:
                    finish(sock, "timeout")
    finally:
        elapsed = time.monotonic() - start
        for sock in list(started):
            sock.close()
        selector.close()
    return {
        "connections": done,
        "failures": dict(failures),
        "seconds": elapsed,
        "per_second": done / elapsed if elapsed else 0.0,
        "parallel": parallel,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("client", "server"))
    parser.add_argument("address", help="the server's address")
    parser.add_argument("port", type=int)
    parser.add_argument("--seconds", type=float, default=5.0, help="at most this long")
    parser.add_argument("--count", type=int, default=20_000, help="client: at most this many")
    parser.add_argument("--parallel", type=int, default=16, help="client: connections at once")
    parser.add_argument("--timeout", type=float, default=2.0, help="client: per connection")
    parser.add_argument("--max-failures", type=int, default=50, help="client: stop after")
    args = parser.parse_args()
    if args.role == "server":
        serve(args.address, args.port, args.seconds)
        return
    report = connect_loop(
        args.address,
        args.port,
        count=args.count,
        seconds=args.seconds,
        parallel=args.parallel,
        timeout=args.timeout,
        max_failures=args.max_failures,
    )
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
