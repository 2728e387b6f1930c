"""
Tests for L{sockplay.client}: the client protocol on in-memory transports,
the client and server together through L{twisted.test.iosim}, and the
command line's error reporting.
"""

from __future__ import annotations

import struct

import pytest
from support.fakes import (
    HalfCloseableTransport,
    halfCloseableClient,
    halfCloseableServer,
    pumpWithHalfClose,
)
from twisted.internet import error
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.test.iosim import connectedServerAndClient

from sockplay.client.command import (
    NoReply,
    Options,
    ReplyClientProtocol,
    describeFailure,
    formatReply,
    request,
)
from sockplay.framing import MessageTooLong, TruncatedMessage
from sockplay.server.protocol import EchoReplyFactory, ServerSettings

HELLO = b"Hello Server !"
REPLY = b"Message received: Hello Server !"


def int32(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def result(d: Deferred[bytes]) -> bytes | Failure:
    """
    What C{d} fired with, which must be already.
    """
    out: list[bytes | Failure] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    return out[0]


def connect(framing: str = "raw", message: bytes = HELLO) -> tuple[
    ReplyClientProtocol, HalfCloseableTransport
]:
    protocol = ReplyClientProtocol(message, framing)
    transport = HalfCloseableTransport()
    protocol.makeConnection(transport)
    return protocol, transport


@pytest.mark.parametrize(
    "framing, wire",
    [
        ("raw", HELLO),
        ("line", HELLO + b"\n"),
        ("eof", HELLO),
        ("int32", int32(HELLO)),
    ],
)
def test_sendsFramedMessage(framing: str, wire: bytes) -> None:
    """
    On connect, the client sends its message in the chosen framing.
    """
    _, transport = connect(framing)
    assert transport.value() == wire


def test_eofHalfClosesAfterSending() -> None:
    """
    In eof framing, the client half-closes after its message, which is how
    the server knows it has ended.
    """
    _, transport = connect("eof")
    assert transport.writeClosed


def test_otherFramingsDoNotHalfClose() -> None:
    """
    Only eof framing half-closes on its own.
    """
    _, transport = connect("line")
    assert not transport.writeClosed


def test_rawReplyEndsWhenServerCloses() -> None:
    """
    A raw reply is everything received until the server closes (here, a
    reply that does not echo the message), however many reads it takes;
    then the client closes too.
    """
    protocol, transport = connect("raw")
    protocol.dataReceived(b"Error: ")
    protocol.dataReceived(b"nope\n")
    assert not protocol.reply.called
    protocol.readConnectionLost()
    assert result(protocol.reply) == b"Error: nope\n"
    assert transport.disconnecting


def test_rawEchoCompleteWithoutClose() -> None:
    """
    A raw reply that ends with the message sent is complete at once, so a
    keep-open server that never closes still answers; a reply split across
    reads is put back together first.
    """
    protocol, transport = connect("raw")
    protocol.dataReceived(REPLY[:-3])
    assert not protocol.reply.called
    protocol.dataReceived(REPLY[-3:])
    assert result(protocol.reply) == REPLY
    assert transport.disconnecting


def test_rawReplyOnConnectionLost() -> None:
    """
    The tutorial's server closes outright after its reply: that ends the
    reply too.
    """
    protocol, _ = connect("raw")
    protocol.dataReceived(REPLY)
    protocol.connectionLost(Failure(error.ConnectionDone()))
    assert result(protocol.reply) == REPLY


def test_lineReplyEndsAtLF() -> None:
    """
    A line reply ends at the first LF, without waiting for the close; the
    delimiter is not part of the reply.
    """
    protocol, transport = connect("line")
    protocol.dataReceived(REPLY + b"\r")
    assert not protocol.reply.called
    protocol.dataReceived(b"\nextra\n")
    assert result(protocol.reply) == REPLY
    assert transport.disconnecting


def test_lineUnterminatedReplyKept() -> None:
    """
    A server that closes without ending its line still gave a reply.
    """
    protocol, _ = connect("line")
    protocol.dataReceived(REPLY)
    protocol.connectionLost(Failure(error.ConnectionDone()))
    assert result(protocol.reply) == REPLY


def test_int32Reply() -> None:
    """
    An int32 reply is one length-prefixed frame, split however it arrives.
    """
    protocol, _ = connect("int32")
    wire = int32(REPLY)
    protocol.dataReceived(wire[:3])
    protocol.dataReceived(wire[3:])
    assert result(protocol.reply) == REPLY


def test_int32TruncatedReply() -> None:
    """
    A close in the middle of an int32 frame is a failure, not a short reply.
    """
    protocol, _ = connect("int32")
    protocol.dataReceived(int32(REPLY)[:-1])
    protocol.connectionLost(Failure(error.ConnectionDone()))
    reply = result(protocol.reply)
    assert isinstance(reply, Failure) and reply.check(TruncatedMessage)


@pytest.mark.parametrize("framing", ["raw", "line", "eof", "int32"])
def test_closedWithoutReply(framing: str) -> None:
    """
    A server that closes without sending anything gives L{NoReply}.
    """
    protocol, _ = connect(framing)
    protocol.connectionLost(Failure(error.ConnectionDone()))
    reply = result(protocol.reply)
    assert isinstance(reply, Failure) and reply.check(NoReply)


def test_connectionLostIsReported() -> None:
    """
    A reset before any reply is reported as such, not as a clean close.
    """
    protocol, _ = connect("line")
    protocol.connectionLost(Failure(error.ConnectionLost()))
    reply = result(protocol.reply)
    assert isinstance(reply, Failure) and reply.check(error.ConnectionLost)


def test_replyTooLong() -> None:
    """
    The client does not hold an unbounded reply in memory.
    """
    protocol = ReplyClientProtocol(HELLO, "raw", maxReply=10)
    protocol.makeConnection(HalfCloseableTransport())
    protocol.dataReceived(b"x" * 11)
    reply = result(protocol.reply)
    assert isinstance(reply, Failure) and reply.check(MessageTooLong)


def test_cancelAborts() -> None:
    """
    Cancelling the reply (the timeout does) aborts the connection.
    """
    protocol, transport = connect("line")
    protocol.reply.cancel()
    assert transport.aborted
    result(protocol.reply)  # consume the CancelledError
    protocol.connectionLost(Failure(error.ConnectionAborted()))


def test_formatReplyEscapesInvalidUTF8() -> None:
    """
    The printed reply is UTF-8; bytes that are not valid UTF-8 are shown as
    backslash escapes rather than dropped.
    """
    assert formatReply("héllo".encode()) == "Response from the server: héllo"
    assert formatReply(b"a\xffb") == "Response from the server: a\\xffb"


@pytest.mark.parametrize("framing", ["raw", "line", "eof", "int32"])
@pytest.mark.parametrize("keepOpen", [False, True])
def test_clientAndServerTogether(framing: str, keepOpen: bool) -> None:
    """
    The client and the server protocols agree on every framing and
    lifecycle, and both connections end closed.
    """
    if keepOpen and framing == "eof":
        return
    clock = Clock()
    factory = EchoReplyFactory(ServerSettings(framing, keepOpen), clock=clock)
    message = b"\x00\xffHello Server !"
    client, server, pump = connectedServerAndClient(
        lambda: factory.buildProtocol(None),
        lambda: ReplyClientProtocol(message, framing),
        clientTransportFactory=halfCloseableClient,
        serverTransportFactory=halfCloseableServer,
        greet=False,
    )
    pumpWithHalfClose(pump)
    assert result(client.reply) == b"Message received: " + message
    assert pump.clientIO.disconnecting
    assert server.messages == 1


def test_optionsDefaults() -> None:
    """
    The defaults are the tutorial's client.
    """
    config = Options()
    config.parseOptions([])
    assert dict(config) == {
        "host": "127.0.0.1",
        "port": 12345,
        "connect": None,
        "message": b"Hello Server !",
        "framing": "raw",
        "timeout": 10.0,
        "tls": 0,
        "ca": None,
        "server-name": None,
        "insecure": 0,
        "count": None,
        "interval": None,
        "keep-open": 0,
        "json": 0,
        "retries": 0,
        "backoff": 0.1,
        "backoff-max": 5.0,
    }


@pytest.mark.parametrize(
    "argv",
    [["--port", "x"], ["--port", "0"], ["--port", "70000"], ["--framing", "xml"],
     ["--timeout", "0"], ["--timeout", "-1"], ["--bogus"],
     ["--count", "0"], ["--count", "x"], ["--count", "2", "--interval", "-1"],
     ["--count", "2", "--interval", "nan"], ["--retries", "-1"], ["--retries", "x"],
     ["--retries", "1", "--backoff", "-1"], ["--retries", "1", "--backoff", "inf"],
     ["--retries", "1", "--backoff-max", "nan"]],
)
def test_optionsBad(argv: list[str]) -> None:
    """
    Bad values are usage errors.
    """
    with pytest.raises(usage.UsageError):
        Options().parseOptions(argv)


@pytest.mark.parametrize("option", [["--ca", "ca.pem"], ["--server-name", "x"], ["--insecure"]])
def test_tlsOptionsNeedTLS(option: list[str]) -> None:
    """
    The TLS settings are usage errors without C{--tls}, rather than being
    silently ignored on a plain connection.
    """
    with pytest.raises(usage.UsageError, match=f"{option[0]} needs --tls"):
        Options().parseOptions(option)


def test_insecureWithCARejected() -> None:
    """
    C{--insecure} checks nothing, so a C{--ca} with it is a usage error.
    """
    with pytest.raises(usage.UsageError, match="--insecure"):
        Options().parseOptions(["--tls", "--insecure", "--ca", "ca.pem"])


def test_tlsWithEOFFramingRejected() -> None:
    """
    eof framing needs a half-close, which TLS cannot do: with C{--tls} it is
    a usage error, found before connecting.
    """
    with pytest.raises(usage.UsageError, match="cannot half-close"):
        Options().parseOptions(["--tls", "--framing", "eof"])


def test_tlsWithConnectNeedsServerName() -> None:
    """
    With C{--connect} there is no C{--host} to check the certificate
    against: C{--server-name} is required (or C{--insecure}).
    """
    connect = ["--tls", "--connect", "unix:path=/tmp/sockplay.sock"]
    with pytest.raises(usage.UsageError, match="--server-name"):
        Options().parseOptions(connect)
    config = Options()
    config.parseOptions([*connect, "--server-name", "localhost"])
    assert config.serverName() == "localhost"
    Options().parseOptions([*connect, "--insecure"])


def test_serverNameDefaultsToHost() -> None:
    """
    The certificate is checked against C{--host} unless C{--server-name}
    says otherwise.
    """
    config = Options()
    config.parseOptions(["--tls", "--host", "::1"])
    assert config.serverName() == "::1"


@pytest.mark.parametrize("option", [["--interval", "1"], ["--keep-open"], ["--json"]])
def test_probeOptionsNeedCount(option: list[str]) -> None:
    """
    The probe's settings are usage errors without C{--count}: without it the
    client does exactly one exchange, as it always did.
    """
    with pytest.raises(usage.UsageError, match=f"{option[0]} needs --count"):
        Options().parseOptions(option)


def test_probeIntervalDefault() -> None:
    """
    With C{--count}, probes are one second apart unless C{--interval} says
    otherwise.
    """
    config = Options()
    config.parseOptions(["--count", "3"])
    assert (config["count"], config["interval"]) == (3, 1.0)
    config = Options()
    config.parseOptions(["--count", "3", "--interval", "0"])
    assert config["interval"] == 0.0


def test_probeKeepOpenEOFRejected() -> None:
    """
    An eof message ends only when the client half-closes, so it cannot
    share a connection with the next one.
    """
    with pytest.raises(usage.UsageError, match="--keep-open cannot be used with --framing eof"):
        Options().parseOptions(["--count", "2", "--keep-open", "--framing", "eof"])


def test_optionsEmptyRawMessage() -> None:
    """
    An empty message cannot be sent in raw framing (there would be nothing
    on the wire); in the other framings it can.
    """
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--message", ""])
    config = Options()
    config.parseOptions(["--message", "", "--framing", "line"])
    assert config["message"] == b""


def test_optionsMessageBytesRoundTrip() -> None:
    """
    A message that is not valid UTF-8 on the command line is sent as the
    bytes the shell passed.
    """
    config = Options()
    config.parseOptions(["--message", b"a\xffb".decode("utf-8", "surrogateescape")])
    assert config["message"] == b"a\xffb"


def test_requestTimesOut() -> None:
    """
    The timeout bounds connect plus reply: a server that accepts and stays
    silent makes the request fail after C{--timeout} seconds, and the
    connection is aborted.
    """
    reactor = MemoryReactorClock()
    config = Options()
    config.parseOptions(["--connect", "tcp:host=127.0.0.1:port=12345", "--timeout", "3"])
    d = Deferred.fromCoroutine(request(reactor, config))
    host, port, factory, _, _ = reactor.tcpClients[0]
    assert (host, port) == ("127.0.0.1", 12345)
    protocol = factory.buildProtocol(None)
    transport = HalfCloseableTransport()
    protocol.makeConnection(transport)
    reactor.advance(2.9)
    assert not d.called
    reactor.advance(0.1)
    failure = result(d)
    assert isinstance(failure, Failure) and failure.check(TimeoutError)
    assert transport.aborted
    assert describeFailure(failure, config) == (
        "no reply from tcp:host=127.0.0.1:port=12345 within 3 s"
    )


def test_requestConnectTimesOut() -> None:
    """
    The timeout covers the connect too.
    """
    reactor = MemoryReactorClock()
    config = Options()
    config.parseOptions(["--timeout", "2"])
    d = Deferred.fromCoroutine(request(reactor, config))
    reactor.advance(2)
    failure = result(d)
    assert isinstance(failure, Failure)
    assert describeFailure(failure, config) == "no reply from 127.0.0.1:12345 within 2 s"


@pytest.mark.parametrize(
    "exception, message",
    [
        (error.ConnectionRefusedError(), "connection refused by 127.0.0.1:12345"),
        (NoReply("connection closed without a reply"), "connection closed without a reply"),
        (error.DNSLookupError(), "cannot resolve '127.0.0.1'"),
    ],
)
def test_describeFailure(exception: Exception, message: str) -> None:
    """
    Expected failures become one readable line.
    """
    config = Options()
    config.parseOptions([])
    assert describeFailure(Failure(exception), config) == message


def test_describeFailureBug() -> None:
    """
    An unexpected exception is not dressed up as an expected failure: it
    keeps its traceback.
    """
    config = Options()
    config.parseOptions([])
    assert describeFailure(Failure(ZeroDivisionError()), config) is None
