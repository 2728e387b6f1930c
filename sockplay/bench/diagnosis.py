"""
Why a run failed, when the failures point at a setting: one line that says
what the server is doing and which flag fixes it, printed after the error
summary (C{Hint: ...}).

Most failed first runs are not a broken server but a bench and a server
set up differently: a keep-open bench against a one-shot server, a one-shot
bench against a keep-open one, another framing, a TLS listener. Each shows
in what the failures look like (the symptoms the load counts, see
L{SYMPTOMS <sockplay.bench.check.SYMPTOMS>}, and the first wrong reply), so
the diagnosis is a pure function of the results: no I/O.
"""

from __future__ import annotations

import struct

from sockplay.bench.plan import Plan
from sockplay.bench.stats import Results

__all__ = ["diagnose", "explainReply"]

_FRAMINGS = ("raw", "line", "int32", "eof")

_INT32 = struct.Struct(">I")

# The first bytes of a TLS record: an alert or a handshake, TLS 1.x.
_TLS_RECORDS = (b"\x15\x03", b"\x16\x03")

# An int32 length from this up (a first byte that is not zero) is text read
# as a length: no echo of a benchmark's message is 16 MiB long.
_TEXT_AS_LENGTH = 1 << 24

# The most characters of a server's error reply a hint quotes.
_QUOTED = 60

_NOT_TLS = "bench a plain tcp: listener (the bench does not speak TLS)"


def _otherFramings(framing: str) -> str:
    """
    The framings other than C{framing}, as a hint lists them.
    """
    others = [name for name in _FRAMINGS if name != framing]
    return ", ".join(others[:-1]) + " or " + others[-1]


def explainReply(received: bytes, framing: str, message: bytes, prefix: bytes, request: bytes
                 ) -> str:
    """
    What a wrong reply says about the server, and which flag fixes it.

    @param received: the wrong reply as received, from its first byte.
    @param framing: the bench's framing.
    @param message: the message the bench sent.
    @param prefix: the prefix it expected.
    @param request: the request it sent, framed.
    """
    if received.startswith(_TLS_RECORDS):
        return f"the replies are TLS records: the server listens with TLS (ssl:); {_NOT_TLS}."
    error = received.find(b"Error:")
    if error >= 0:
        text = received[error:].split(b"\n", 1)[0][:_QUOTED].decode("utf-8", "replace")
        return (
            f"the server answered {text!r} instead of an echo: check that --framing "
            f"({framing}) is the server's, and the server's limits."
        )
    if framing != "raw" and received.startswith(prefix + request):
        return (
            f"the server echoed the whole request, its {framing} framing included, as one "
            f"message: it is a raw server; use --framing raw, or start it with --framing {framing}."
        )
    if framing == "int32" and len(received) >= _INT32.size:
        (length,) = _INT32.unpack_from(received)
        if length >= _TEXT_AS_LENGTH:
            return (
                f"the replies do not start with their length (the first 4 bytes read as "
                f"{length:,} bytes): the server's framing is not int32; use the server's "
                f"--framing ({_otherFramings(framing)})."
            )
    if framing == "line" and b"\n" not in received:
        return (
            "the replies carry no LF: the server's framing is not line; use the server's "
            f"--framing ({_otherFramings(framing)})."
        )
    body = received[_INT32.size :] if framing == "int32" else received
    at = body.find(message) if message else -1
    if at >= 0 and body[:at] != prefix:
        other = body[:at].decode("utf-8", "replace")
        return f"the replies carry another prefix, {other!r}: pass the server's with --prefix."
    return (
        f"the replies are not what a server with --framing {framing} and this --prefix "
        "sends: check both against the server's."
    )


def diagnose(results: Results, plan: Plan, message: bytes, prefix: bytes, target: str
             ) -> str | None:
    """
    What the failures of a run point at, and which flag fixes it: one line,
    or C{None} when they point at nothing in particular (a server that
    fails now and then, a run stopped by hand).

    @param plan: the load that was generated (its framing, mode, timeout).
    @param message: the message sent.
    @param prefix: the prefix expected.
    @param target: the server, as messages name it.
    """
    if not results.errorCount:
        return None
    framing = plan.exchange.framing
    counts = {**results.symptoms}
    counts["mismatch"] = results.errors.get("mismatch", 0)
    counts["extra"] = results.errors.get("extra", 0)
    counts["connect"] = results.errors.get("connect", 0)
    kind, count = max(counts.items(), key=lambda item: item[1])
    # Only a failure that most failures share points at a setting.
    if not count or 2 * count < results.errorCount:
        return None
    timeout = f"{plan.timeout:g} s"
    if kind == "closed-after-reply":
        if plan.mode == "hold":
            return (
                "the server closed every connection after one reply: it is a one-shot "
                "server; --hold needs a server started with --keep-open."
            )
        return (
            "the server closed every connection after one reply: it is a one-shot server; "
            "drop --keep-open, or start it with --keep-open."
        )
    if kind == "open-after-reply":
        return (
            f"every reply came whole, but the server kept the connection open ({timeout}): it "
            "is a keep-open server; add --keep-open, or start it without --keep-open."
        )
    if kind == "mismatch" and results.firstReceived is not None:
        return explainReply(results.firstReceived, framing, message, prefix,
                            plan.exchange.request)
    if kind == "no-delimiter":
        return (
            "the replies came whole but for their LF: the server's framing is not line; use "
            f"the server's --framing ({_otherFramings(framing)})."
        )
    if kind == "reply-unfinished":
        return (
            f"replies stopped part-way for {timeout}: check --framing and --prefix against "
            "the server's, or raise --timeout for a slow server."
        )
    if kind == "stalled":
        return (
            f"the server stopped answering for {timeout} at a time: it is stalled or "
            "overloaded; raise --timeout to wait longer."
        )
    if kind == "extra":
        return "the server sent bytes past the replies owed: check --framing against the server's."
    if results.ok:
        return None
    if kind == "no-reply":
        return (
            f"no reply came in {timeout}: the server is waiting for the rest of a message, "
            f"so its framing is not {framing}; use the server's --framing "
            f"({_otherFramings(framing)}), or raise --timeout for a slow server."
        )
    if kind == "closed-without-reply":
        return (
            "the server closed every connection without a reply: if it listens with TLS "
            f"(ssl:), {_NOT_TLS}; otherwise check --framing against the server's."
        )
    if kind == "connect":
        return (
            f"nothing accepted a connection at {target}: start the server, or point "
            "--host and --port (or --connect) at it."
        )
    return None
