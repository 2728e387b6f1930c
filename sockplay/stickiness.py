"""
Stickiness, for C{--tally} with C{--keep-open}: whether every reply on one
connection came from one backend identity (see L{sockplay.tally}), and,
where not, each change with the reply that saw it.

Bounded whatever the servers send: the first L{CHANGES_KEPT} changes are
kept in detail, the rest only counted. Imports nothing of sockplay's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CHANGES_KEPT", "Change", "ConnectionWatch", "Stickiness"]

# Changes of identity kept in detail (the first ones, where a problem
# starts); later ones are only counted.
CHANGES_KEPT = 10


@dataclass(frozen=True)
class Change:
    """
    A reply on a connection that came from another identity than the
    reply before it.

    @ivar seq: which reply: the probe's sequence number (client), or the
        reply's number on its connection, from 1 (bench).
    @ivar before: the identity of the reply before it.
    @ivar after: its own identity.
    """

    seq: int
    before: bytes
    after: bytes


@dataclass
class Stickiness:
    """
    Whether every reply on each connection came from one identity, over
    any number of connections, each followed by a L{ConnectionWatch}.

    @ivar connections: connections that got at least one reply.
    @ivar changedConnections: connections whose identity changed at least
        once.
    @ivar changes: the first L{CHANGES_KEPT} changes, in the order seen.
    @ivar moreChanges: changes seen past those.
    """

    connections: int = 0
    changedConnections: int = 0
    changes: list[Change] = field(default_factory=list)
    moreChanges: int = 0

    @property
    def sticky(self) -> bool:
        """
        Whether no connection's identity changed.
        """
        return not self.changedConnections

    def watch(self) -> ConnectionWatch:
        """
        Follow a new connection.
        """
        return ConnectionWatch(self)

    def addChange(self, change: Change) -> None:
        """
        Keep C{change} if fewer than L{CHANGES_KEPT} are kept, else count
        it.
        """
        if len(self.changes) < CHANGES_KEPT:
            self.changes.append(change)
        else:
            self.moreChanges += 1

    def merge(self, other: Stickiness) -> None:
        """
        Add C{other}'s connections and changes to these (its changes after
        these, within the same bound).
        """
        self.connections += other.connections
        self.changedConnections += other.changedConnections
        for change in other.changes:
            self.addChange(change)
        self.moreChanges += other.moreChanges

    def toWire(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "changedConnections": self.changedConnections,
            "changes": [[c.seq, c.before.hex(), c.after.hex()] for c in self.changes],
            "moreChanges": self.moreChanges,
        }

    @classmethod
    def fromWire(cls, wire: dict[str, Any]) -> Stickiness:
        return cls(
            connections=wire["connections"],
            changedConnections=wire["changedConnections"],
            changes=[
                Change(seq, bytes.fromhex(before), bytes.fromhex(after))
                for seq, before, after in wire["changes"]
            ],
            moreChanges=wire["moreChanges"],
        )


class ConnectionWatch:
    """
    The identities of the replies on one connection, told to its
    L{Stickiness}: the first, and each change.

    @ivar identity: the identity of the latest reply, or C{None} before the
        first.
    """

    __slots__ = ("_changed", "_stickiness", "identity")

    def __init__(self, stickiness: Stickiness) -> None:
        self._stickiness = stickiness
        self._changed = False
        self.identity: bytes | None = None

    def saw(self, identity: bytes, seq: int) -> None:
        """
        Reply C{seq} on this connection came from C{identity}.
        """
        last = self.identity
        if identity == last:
            return
        self.identity = identity
        stickiness = self._stickiness
        if last is None:
            stickiness.connections += 1
            return
        if not self._changed:
            self._changed = True
            stickiness.changedConnections += 1
        stickiness.addChange(Change(seq, last, identity))
