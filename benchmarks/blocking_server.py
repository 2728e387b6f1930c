"""
The socket tutorial's blocking server, for comparison: accept, one
recv(1024), send the prefix and what it got, close. One-shot raw framing
only. --threads handles each connection on its own thread instead of one
after the other.

It prints "Listening on tcp:HOST:PORT" once it listens (port 0 picks a free
one) and stops on SIGINT or SIGTERM.

    python benchmarks/blocking_server.py --port 0
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading


def answer(connection: socket.socket, prefix: bytes) -> None:
    with connection:
        data = connection.recv(1024)
        connection.sendall(prefix + data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12345)
    parser.add_argument("--prefix", default="Message received: ")
    parser.add_argument("--backlog", type=int, default=5)
    parser.add_argument("--threads", action="store_true", help="a thread per connection")
    settings = parser.parse_args(argv)
    prefix = settings.prefix.encode("utf-8", "surrogateescape")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((settings.host, settings.port))
        listener.listen(settings.backlog)
        host, port = listener.getsockname()[:2]
        print(f"Listening on tcp:{host}:{port}", flush=True)
        try:
            while True:
                connection, _ = listener.accept()
                if settings.threads:
                    threading.Thread(target=answer, args=(connection, prefix), daemon=True).start()
                else:
                    answer(connection, prefix)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
