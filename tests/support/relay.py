"""
A minimal round-robin TCP relay for tests of C{--tally}: each new
connection goes to the next of its backends, in turn, through Twisted's
C{portforward}. Run as a program, it says what it listens on as a sockplay
server does, so that L{support.servers.ServerPool} starts and stops it:

    python tests/support/relay.py --backend 4242 --backend 4243 --listen tcp:0

It stands in for a load balancer without HAProxy; the HAProxy recipe has
tests of its own.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import react
from twisted.protocols.portforward import ProxyFactory

LOOPBACK = "127.0.0.1"


class RoundRobinFactory(ProxyFactory):
    """
    A C{portforward} factory that relays each connection to the next of
    its backend ports on loopback, in turn.
    """

    def __init__(self, ports: Sequence[int]) -> None:
        super().__init__(LOOPBACK, ports[0])
        self._ports = itertools.cycle(ports)

    def buildProtocol(self, addr: Any) -> Any:
        # ProxyServer connects to the factory's port when it is connected,
        # right after it is built.
        self.port = next(self._ports)
        return super().buildProtocol(addr)


async def _main(reactor: Any, listen: str, ports: list[int]) -> None:
    port = await serverFromString(reactor, listen).listen(RoundRobinFactory(ports))
    address = port.getHost()
    print(f"Listening on tcp:{address.host}:{address.port} (relay)", flush=True)
    print("Server is running, waiting for connections...", flush=True)
    await Deferred()


def main(argv: Sequence[str] | None = None) -> None:
    """
    Relay C{--listen} to the C{--backend} ports until stopped (SIGTERM).
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", type=int, action="append", required=True)
    parser.add_argument("--listen", required=True)
    options = parser.parse_args(argv)
    react(lambda reactor: Deferred.fromCoroutine(_main(reactor, options.listen, options.backend)))


if __name__ == "__main__":
    main(sys.argv[1:])
