"""
Which backend answered: replies grouped by the identity of the server that
sent them, for C{--tally} in the client and in the load generator.

A sockplay server answers a message with its rendered C{--prefix} in front
of the message, so the identity of a reply is the reply, unframed, minus
the echoed message at its end: with C{--prefix '{hostname}:{pid} '} it
tells the backends behind a load balancer apart. A reply that does not end
with the message is not an echo and has no identity: the client and the
bench already count it as a failure (a lost probe, a C{mismatch}), and it
is not tallied.

A L{Tally} counts replies per identity, with an HDR histogram of their
round-trip times each (for p50 and p99), and merges exactly with another
(the bench's load processes each send theirs). Its
L{sockplay.stickiness.Stickiness} checks that every reply on one
connection came from one identity. Both are bounded, whatever the servers
send: at most L{MAX_IDENTITIES} identities are counted apart (the rest
under one C{other} row), an identity is kept to its first
L{IDENTITY_KEPT} bytes (and the stickiness keeps only the first changes).

Imports nothing of sockplay's but the latency histogram's settings and the
stickiness check, so that both the client and the bench may use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sockplay.latency import HIGHEST_MICROSECONDS, newHistogram
from sockplay.stickiness import Stickiness

__all__ = [
    "IDENTITY_KEPT",
    "MAX_IDENTITIES",
    "Tally",
    "formatTally",
    "identityOf",
    "showIdentity",
]

# Distinct identities counted apart: far more backends than one load
# balancer spreads over in a test, few enough that a server answering with
# a new identity every time (a {peer} prefix, a hostile server) cannot make
# the tally grow without end. Past it, replies count under one "other" row.
MAX_IDENTITIES = 64

# Bytes of an identity kept (and shown): a host name and a pid fit many
# times over; a longer identity is told apart and shown by its first
# IDENTITY_KEPT bytes, marked as cut.
IDENTITY_KEPT = 128



def identityOf(reply: bytes, message: bytes) -> bytes | None:
    """
    The identity of C{reply}, the unframed answer to C{message}: what comes
    before the echoed message, kept to its first L{IDENTITY_KEPT} bytes
    (one byte more, so that a cut identity can be told from one that is
    exactly that long).

    @return: the identity, or C{None} if C{reply} is not an echo of
        C{message} (it does not end with it).
    """
    if not reply.endswith(message):
        return None
    return reply[: min(len(reply) - len(message), IDENTITY_KEPT + 1)]


def _escapeText(text: str) -> str:
    """
    C{text} with every character that is not printable (controls, line
    breaks, a terminal's escape) and the single quote escaped, so that a
    hostile server cannot write to the terminal through it.
    """
    out = []
    for char in text:
        if char == "'":
            out.append("\\'")
        elif char.isprintable():
            out.append(char)
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def _identityText(identity: bytes) -> str:
    """
    An identity as text: UTF-8, with any byte that is not valid UTF-8 as a
    backslash escape (as the client prints replies), and without the byte
    kept only to mark it cut.
    """
    return identity[:IDENTITY_KEPT].decode("utf-8", "backslashreplace")


def showIdentity(text: str | None, truncated: bool = False) -> str:
    """
    How a table shows an identity: quoted, so that spaces at its ends
    show, escaped as L{_escapeText} says, with C{...} after the quote if it
    was cut; C{(other identities)} for the row of those past
    L{MAX_IDENTITIES}.

    @param text: the identity as text (as L{Tally.report} gives it), or
        C{None} for the other row.
    """
    if text is None:
        return "(other identities)"
    return "'" + _escapeText(text) + "'" + ("..." if truncated else "")


def _ms(micros: int) -> float:
    """
    Microseconds as milliseconds, rounded to the microsecond.
    """
    return round(micros / 1000, 3)


@dataclass
class _Row:
    """
    The replies of one identity: how many, and their round-trip times.

    @ivar maximum: the exact largest round-trip time, in microseconds (the
        histogram answers with the top of a value's bucket, which can pass
        it).
    """

    count: int = 0
    histogram: Any = field(default_factory=newHistogram)
    maximum: int = 0

    def record(self, micros: int, count: int) -> None:
        """
        Count C{count} replies that each took C{micros} microseconds.
        """
        micros = min(max(micros, 0), HIGHEST_MICROSECONDS)
        self.count += count
        self.histogram.record_value(micros, count)
        self.maximum = max(self.maximum, micros)

    def merge(self, other: _Row) -> None:
        """
        Add C{other}'s replies to these.
        """
        self.count += other.count
        self.histogram.add(other.histogram)
        self.maximum = max(self.maximum, other.maximum)

    def percentile(self, percentile: float) -> int:
        """
        The round-trip time, in microseconds, that C{percentile} percent of
        the replies took at most.
        """
        return min(int(self.histogram.get_value_at_percentile(percentile)), self.maximum)

    def toWire(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "histogram": self.histogram.encode().decode("ascii"),
            "maximum": self.maximum,
        }

    @classmethod
    def fromWire(cls, wire: dict[str, Any]) -> _Row:
        row = cls(count=wire["count"], maximum=wire["maximum"])
        if row.count:
            row.histogram.decode_and_add(wire["histogram"].encode("ascii"))
        return row


class Tally:
    """
    Replies counted per identity, each identity's round-trip times in a
    histogram, and the stickiness of the connections they came on.

    @ivar replies: every reply tallied, the other row's included.
    @ivar stickiness: whether each connection's replies came from one
        identity (as far as the replies were watched).
    """

    def __init__(self) -> None:
        self.replies = 0
        self.stickiness = Stickiness()
        self._rows: dict[bytes, _Row] = {}
        self._other: _Row | None = None

    def _row(self, identity: bytes) -> _Row:
        """
        The row that counts C{identity}: its own, or, past
        L{MAX_IDENTITIES}, the other row.
        """
        row = self._rows.get(identity)
        if row is not None:
            return row
        if len(self._rows) < MAX_IDENTITIES:
            row = self._rows[identity] = _Row()
            return row
        if self._other is None:
            self._other = _Row()
        return self._other

    def record(self, identity: bytes, micros: int, count: int = 1) -> None:
        """
        Count C{count} replies from C{identity} (as L{identityOf} gives
        it), each with a round-trip time of C{micros} microseconds.
        """
        self.replies += count
        self._row(identity).record(micros, count)

    def merge(self, other: Tally) -> None:
        """
        Add C{other}'s replies and stickiness to these; an identity new to
        these counts under the other row if L{MAX_IDENTITIES} are already
        counted apart.
        """
        self.replies += other.replies
        for identity, row in other._rows.items():
            self._row(identity).merge(row)
        if other._other is not None:
            if self._other is None:
                self._other = _Row()
            self._other.merge(other._other)
        self.stickiness.merge(other.stickiness)

    def toWire(self) -> dict[str, Any]:
        """
        This tally as plain data (JSON-safe), to pass between processes:
        identities in hex, histograms in HdrHistogram's compressed base64.
        """
        return {
            "replies": self.replies,
            "rows": [[identity.hex(), row.toWire()] for identity, row in self._rows.items()],
            "other": None if self._other is None else self._other.toWire(),
            "stickiness": self.stickiness.toWire(),
        }

    @classmethod
    def fromWire(cls, wire: dict[str, Any]) -> Tally:
        """
        The inverse of L{toWire}.
        """
        tally = cls()
        tally.replies = wire["replies"]
        for identity, row in wire["rows"][:MAX_IDENTITIES]:
            tally._rows[bytes.fromhex(identity)[: IDENTITY_KEPT + 1]] = _Row.fromWire(row)
        if wire["other"] is not None:
            tally._other = _Row.fromWire(wire["other"])
        tally.stickiness = Stickiness.fromWire(wire["stickiness"])
        return tally

    def counts(self) -> dict[bytes | None, int]:
        """
        The number of replies per identity (C{None}: the other row).
        """
        counts: dict[bytes | None, int] = {
            identity: row.count for identity, row in self._rows.items()
        }
        if self._other is not None:
            counts[None] = self._other.count
        return counts

    def report(self, stickiness: bool | None = None) -> dict[str, Any]:
        """
        The tally as the C{--json} output carries it (and as L{formatTally}
        prints it): C{replies}, and C{backends}, most replies first (the
        other row last), each with its C{identity} (text, C{None} for the
        other row), whether it was C{truncated}, its C{count}, its C{share}
        of all replies (0 to 1) and its C{p50_ms} and C{p99_ms}.

        @param stickiness: C{True} to add whether the replies were sticky
            (C{sticky}, C{connections}, C{changed_connections}, the first
            C{changes} as C{seq}, C{from} and C{to}, and how many more
            were C{changes_not_listed}; C{sticky} is C{None} if no
            connection got a reply); C{False} to say that it was not
            checked (C{sticky} is C{None}, and there is no C{connections});
            C{None} to say nothing of it.
        """
        rows = sorted(self._rows.items(), key=lambda item: (-item[1].count, item[0]))
        entries: list[tuple[bytes | None, _Row]] = list(rows)
        if self._other is not None:
            entries.append((None, self._other))
        backends = []
        for identity, row in entries:
            backends.append(
                {
                    "identity": None if identity is None else _identityText(identity),
                    "truncated": identity is not None and len(identity) > IDENTITY_KEPT,
                    "count": row.count,
                    "share": round(row.count / self.replies, 6) if self.replies else 0.0,
                    "p50_ms": _ms(row.percentile(50.0)),
                    "p99_ms": _ms(row.percentile(99.0)),
                }
            )
        report: dict[str, Any] = {"replies": self.replies, "backends": backends}
        if stickiness is None:
            return report
        if not stickiness:
            report["sticky"] = None
            return report
        sticky = self.stickiness
        report.update(
            {
                # Nothing to tell with no connection that got a reply.
                "sticky": sticky.sticky if sticky.connections else None,
                "connections": sticky.connections,
                "changed_connections": sticky.changedConnections,
                "changes": [
                    {
                        "seq": change.seq,
                        "from": _identityText(change.before),
                        "to": _identityText(change.after),
                    }
                    for change in sticky.changes
                ],
                "changes_not_listed": sticky.moreChanges,
            }
        )
        return report


def _plural(count: int, one: str, many: str) -> str:
    """
    C{count} and the noun that goes with it: C{1 reply}, C{2 replies}.
    """
    return f"{count:,} {one if count == 1 else many}"


def formatTally(report: dict[str, Any], needs: str = "--keep-open") -> list[str]:
    """
    The tally as printed after a run's statistics, from its
    L{Tally.report}: a header, one aligned row per identity (count, share,
    p50 and p99, then the identity, last because its length varies), and
    the stickiness, if the report has it.

    @param needs: the option that stickiness needs, for the line that says
        it was not checked.
    """
    backends = report["backends"]
    lines = [
        f"--- tally: {_plural(report['replies'], 'reply', 'replies')} from "
        f"{_plural(len(backends), 'backend', 'backends')} ---"
    ]
    width = max((len(f"{b['count']:,}") for b in backends), default=1)
    for backend in backends:
        lines.append(
            f"  {backend['count']:>{width},}  {backend['share'] * 100:5.1f}%  "
            f"p50 {backend['p50_ms']:.3f} ms  p99 {backend['p99_ms']:.3f} ms  "
            f"{showIdentity(backend['identity'], backend['truncated'])}"
        )
    if "sticky" not in report:
        return lines
    if report["sticky"] is None:
        if "connections" in report:
            lines.append("sticky: not checked (no replies)")
        else:
            lines.append(f"sticky: not checked (it needs {needs}: one connection, many replies)")
    elif report["sticky"]:
        if report["connections"] <= 1:
            lines.append("sticky: yes (every reply on the connection came from one backend)")
        else:
            lines.append(
                f"sticky: yes (on each of the {report['connections']:,} connections, every "
                "reply came from one backend)"
            )
    else:
        lines.extend(_formatChanges(report))
    return lines


def _formatChanges(report: dict[str, Any]) -> list[str]:
    """
    The stickiness lines of a report whose replies were not sticky.
    """
    changes = report["changes"]
    total = len(changes) + report["changes_not_listed"]

    def describe(change: dict[str, Any]) -> str:
        return (
            f"at seq {change['seq']}: {showIdentity(change['from'])} -> "
            f"{showIdentity(change['to'])}"
        )

    if total == 1:
        return [f"sticky: no — identity changed {describe(changes[0])}"]
    connections = _plural(report["connections"], "connection", "connections")
    lines = [
        f"sticky: no — identity changed {total:,} times on "
        f"{report['changed_connections']:,} of {connections}"
    ]
    lines.extend(f"  {describe(change)}" for change in changes)
    if report["changes_not_listed"]:
        lines.append(f"  and {report['changes_not_listed']:,} more")
    return lines
