"""
A textbook Twisted echo-reply server, for comparison: plain Twisted.

A L{LineReceiver} whose C{lineReceived} sends the prefix and the line back
with C{sendLine}, built with C{Factory.forProtocol} and run on the stock
reactor, as Twisted's own examples write it. Line framing, keep-open only:
every line is answered until the client closes. Its delimiter is LF, and a
CR before it stays on the line and so on the reply, as in sockplay's line
framing; its longest line is sockplay's default --max-message. It has none
of sockplay's limits, timeouts or close sequence.

It prints "Listening on tcp:HOST:PORT" once it listens (port 0 picks a free
one) and stops on SIGINT or SIGTERM.

    python benchmarks/twisted_server.py --port 0
"""

from __future__ import annotations

import argparse
import sys

from twisted.internet import endpoints
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

from sockplay.framing import DEFAULT_MAX_MESSAGE


class EchoReply(LineReceiver):
    """
    Answer every line with the prefix and the line.
    """

    delimiter = b"\n"
    MAX_LENGTH = DEFAULT_MAX_MESSAGE
    prefix = b"Message received: "

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(self.prefix + line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12345)
    parser.add_argument("--prefix", default=EchoReply.prefix.decode())
    parser.add_argument("--backlog", type=int, default=50)
    settings = parser.parse_args(argv)
    EchoReply.prefix = settings.prefix.encode("utf-8", "surrogateescape")

    from twisted.internet import reactor

    endpoint = endpoints.TCP4ServerEndpoint(
        reactor, settings.port, backlog=settings.backlog, interface=settings.host
    )

    def listening(port: object) -> None:
        address = port.getHost()  # type: ignore[attr-defined]
        print(f"Listening on tcp:{address.host}:{address.port}", flush=True)

    failures: list[str] = []

    def failed(reason: object) -> None:
        failures.append(reason.getErrorMessage())  # type: ignore[attr-defined]
        reactor.stop()  # type: ignore[attr-defined]

    reactor.callWhenRunning(  # type: ignore[attr-defined]
        lambda: endpoint.listen(Factory.forProtocol(EchoReply)).addCallbacks(listening, failed)
    )
    # The stock reactor stops on SIGINT and SIGTERM.
    reactor.run()  # type: ignore[attr-defined]
    if failures:
        print(f"Error: cannot listen on {settings.host}:{settings.port}: {failures[0]}",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
