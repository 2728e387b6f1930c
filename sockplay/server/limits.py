"""
L{ConnectionLimits}: C{--max-connections} and C{--max-per-peer}, counted
for one server.
"""

from __future__ import annotations

from twisted.internet.interfaces import IAddress

from sockplay.server.settings import ServerSettings

__all__ = ["ConnectionLimits", "peerKey"]


class ConnectionLimits:
    """
    How many connections one server holds, and how many from each client
    address, against its limits: every connection counted in is counted
    out once, when it ends.

    @ivar counted: the connections counted in and not yet out.
    """

    def __init__(self, settings: ServerSettings) -> None:
        """
        @param settings: where the limits come from (C{maxConnections} and
            C{maxPerPeer}; 0 for no limit).
        """
        self.counted = 0
        self._maxConnections = settings.maxConnections
        self._maxPerPeer = settings.maxPerPeer
        self._perPeer: dict[str, int] = {}

    def countIn(self, peer: IAddress | None) -> tuple[str, str] | None:
        """
        Count in a connection from C{peer}, or say why it is over a limit
        (and leave it uncounted): a pair of the outcome (C{busy},
        C{peer-limit}) and the error text.
        """
        if self._maxConnections and self.counted >= self._maxConnections:
            return "busy", "server busy"
        key = peerKey(peer)
        if key is not None:
            already = self._perPeer.get(key, 0)
            if self._maxPerPeer and already >= self._maxPerPeer:
                return "peer-limit", f"too many connections from {key}"
            self._perPeer[key] = already + 1
        self.counted += 1
        return None

    def countOut(self, peer: IAddress | None) -> None:
        """
        Count out a connection from C{peer} that L{countIn} counted in.
        """
        self.counted -= 1
        key = peerKey(peer)
        if key is not None:
            left = self._perPeer.get(key, 1) - 1
            if left > 0:
                self._perPeer[key] = left
            else:
                self._perPeer.pop(key, None)


def peerKey(peer: object) -> str | None:
    """
    The per-peer limit's key: the client's IP address. Connections without
    one (UNIX sockets) are not limited per peer.
    """
    host = getattr(peer, "host", None)
    return host if isinstance(host, str) else None
