"""
The command line of C{python -m sockplay.client}: what it accepts, its
defaults, and the combinations it refuses.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from sockplay.cli import TargetOptions, number
from sockplay.client.connect import (
    BadConnect,
    HostTarget,
    WebSocketTarget,
    hostNameProblem,
    parseConnect,
    parseWebSocketURL,
)
from sockplay.framing import checkKeepOpen, framingOption

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_BACKOFF_MAX",
    "DEFAULT_INTERVAL",
    "DEFAULT_MESSAGE",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "Options",
]

# The socket tutorial's message, so that the defaults are the tutorial's client.
DEFAULT_MESSAGE = "Hello Server !"

# Long enough for a slow server on a slow path, short enough that a hung one
# is reported while someone is still watching.
DEFAULT_TIMEOUT = 10.0

# ping's default: one probe a second.
DEFAULT_INTERVAL = 1.0

# ALPN protocol names are 1 to 255 bytes long (RFC 7301, section 3.1).
MAX_ALPN_NAME = 255

# No retries unless asked: a failure is reported at once, as it always was.
DEFAULT_RETRIES = 0
# The first retry comes within a tenth of a second (a dropped or reset
# connection is usually fine again at once), and no wait is longer than five
# seconds, well within a person's patience and the default --timeout.
DEFAULT_BACKOFF = 0.1
DEFAULT_BACKOFF_MAX = 5.0


class Options(TargetOptions):
    """
    Command-line options of the sockplay client: the server to talk to
    (from L{TargetOptions}), the message and its framing, TLS, the probe
    (C{--count}) and the retries.

    After parsing, C{message} is C{bytes}, C{alpn} the list of C{--alpn}
    protocol names as C{bytes} (in order of preference), and C{interval},
    C{retries}, C{backoff}, C{backoff-max} and C{key} hold their defaults
    where they apply.

    @ivar connectTarget: the host and port of a C{tcp:}, C{tcp6:} or
        C{ssl:} C{--connect} string, read; C{None} without one, or for
        another kind.
    @ivar webSocket: a C{ws://} or C{wss://} C{--connect} URL, read;
        C{None} for any other target.
    """

    connectTarget: HostTarget | None = None
    webSocket: WebSocketTarget | None = None

    program = "python -m sockplay.client"
    longdesc = (
        "Send one message to an echo-reply server and print its reply; with --count, "
        "probe it: several messages, each reply with its round-trip time, then statistics. "
        "With --retries, a request that fails in a way that may pass is tried again."
    )
    optFlags = [
        ["tls", None, "Use TLS, and verify the server's certificate and name (a --connect "
         "ssl: string does too)."],
        ["insecure", None, "With TLS: do not verify the server's certificate (a warning "
         "says so)."],
        ["keep-open", "k", "With --count: send every message on one connection (for a "
         "--keep-open server; line, int32 or raw framing)."],
        ["json", None, "With --count: print one JSON object (every probe and the "
         "statistics) instead of text."],
        ["tally", None, "With --count: group the replies by the backend that sent them (the "
         "part of the reply before the echoed message, such as a server's --prefix "
         "'{hostname}:{pid} ') and print each one's count, share and p50/p99 round-trip "
         "time; with --keep-open, also whether every reply on a connection came from one."],
    ]
    optParameters = [
        ["message", "m", DEFAULT_MESSAGE, "The message to send."],
        ["framing", "f", "raw", "raw, line, eof or int32: must match the server's.", framingOption],
        ["timeout", "t", DEFAULT_TIMEOUT, "Seconds allowed for connect plus reply, for each "
         "attempt (each message with --count; each retry has its own).",
         number("--timeout", float, 0.0, positive=True)],
        ["ca", None, None, "With TLS: trust the CA certificates in this PEM file instead "
         "of the system's."],
        ["server-name", None, None, "With TLS: the name the server's certificate must be "
         "valid for, also sent as the TLS server name (SNI) if it is a host name, with "
         "--insecure too. [default: the host of --connect, or --host]"],
        ["cert", None, None, "With TLS: present the client certificate in this PEM file "
         "(for a server that asks for one: mutual TLS)."],
        ["key", None, None, "With --cert: the PEM file of its private key (unencrypted). "
         "[default: the --cert file, holding both]"],
        ["count", "n", None, "Probe: send this many messages (0: until stopped) and print "
         "statistics; SIGINT or SIGTERM ends it with them.",
         number("--count", int, 0)],
        ["interval", "i", None, f"With --count: seconds from one message to the next. "
         f"[default: {DEFAULT_INTERVAL:g}]", number("--interval", float, 0.0)],
        ["metrics", None, None, "With --count: serve Prometheus /metrics over HTTP on this "
         "Twisted server endpoint (such as tcp:9465:interface=127.0.0.1) while probing: "
         "with --count 0, a probe exporter that runs until SIGTERM."],
        ["retries", None, None, f"Try again, on a new connection, up to this many more times "
         f"after a failure that may pass: refused or reset connection, closed without a reply, "
         f"timed out; not a TLS or name error (with --count, for each message). Each retry is "
         f"one line on stderr. [default: {DEFAULT_RETRIES}]",
         number("--retries", int, 0)],
        ["backoff", None, None, f"With --retries: the longest wait before the first retry, "
         f"in seconds; it doubles for each next one, and each wait is drawn at random from 0 "
         f"up to it. [default: {DEFAULT_BACKOFF:g}]", number("--backoff", float, 0.0)],
        ["backoff-max", None, None, f"With --retries: the cap on that doubling, in seconds. "
         f"[default: {DEFAULT_BACKOFF_MAX:g}, or --backoff if more]",
         number("--backoff-max", float, 0.0)],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["alpn"] = []

    def opt_alpn(self, protocol: str) -> None:
        """
        With TLS: offer this protocol in ALPN; repeat for several, in order
        of preference.
        """
        name = protocol.encode("utf-8", "surrogateescape")
        if not 0 < len(name) <= MAX_ALPN_NAME:
            raise usage.UsageError(
                f"--alpn must be a protocol name of 1 to {MAX_ALPN_NAME} bytes, not {protocol!r}"
            )
        self["alpn"].append(name)

    def postOptions(self) -> None:
        """
        Turn the message into the bytes to send, fill in the defaults that
        depend on other options, and refuse the combinations that cannot
        work.
        """
        # Any byte the shell can pass round-trips, even if it is not UTF-8.
        self["message"] = self["message"].encode("utf-8", "surrogateescape")
        if not self["message"] and self["framing"] == "raw":
            raise usage.UsageError(
                "an empty --message cannot be sent in raw framing (nothing would be sent); "
                "use line, eof or int32"
            )
        if self["connect"]:
            try:
                self.webSocket = parseWebSocketURL(self["connect"])
                if self.webSocket is None:
                    self.connectTarget = parseConnect(self["connect"])
            except BadConnect as e:
                raise usage.UsageError(str(e)) from None
            if self.webSocket is not None and self["framing"] != "raw":
                raise usage.UsageError(
                    "--framing cannot be used with a ws:// or wss:// --connect: each "
                    "WebSocket message is one message"
                )
        else:
            # Checked as Twisted's HostnameEndpoint will, which would
            # otherwise fail only once it connects.
            problem = hostNameProblem(self["host"])
            if problem is not None:
                raise usage.UsageError(
                    f"--host must be a host name or an IP address, not {self['host']!r} "
                    f"({problem})"
                )
        self._checkTLS()
        self._checkProbe()
        self._checkRetries()

    def usesTLS(self) -> bool:
        """
        Whether the client speaks TLS: with C{--tls}, or a C{--connect}
        C{ssl:} string or C{wss://} URL (which the client verifies as
        C{--tls} does).
        """
        target = self.connectTarget
        if self.webSocket is not None:
            return self.webSocket.secure
        return bool(self["tls"]) or (target is not None and target.kind == "ssl")

    def _checkTLS(self) -> None:
        tls = self.usesTLS()
        if self.webSocket is not None and self["tls"]:
            raise usage.UsageError(
                "--tls cannot be used with a ws:// URL: connect to wss://... for WebSocket "
                "over TLS"
            )
        for option in ("ca", "server-name", "insecure", "cert", "key", "alpn"):
            given = self[option] if option in ("insecure", "alpn") else self[option] is not None
            if given and not tls:
                raise usage.UsageError(f"--{option} needs --tls (or a --connect ssl: string)")
        if self["key"] is not None and self["cert"] is None:
            raise usage.UsageError("--key needs --cert: the certificate it is the key of")
        if not tls:
            return
        if self["cert"] is not None and self["key"] is None:
            self["key"] = self["cert"]
        if self["insecure"] and self["ca"]:
            raise usage.UsageError("--insecure verifies nothing, so --ca would not be used")
        if self["framing"] == "eof":
            raise usage.UsageError(
                "--framing eof cannot be used with TLS: a TLS connection cannot half-close, "
                "which is how an eof message ends"
            )
        if self["connect"] and self.connectTarget is None and self.webSocket is None and not (
            self["server-name"] or self["insecure"]
        ):
            raise usage.UsageError(
                "TLS over this --connect endpoint needs --server-name: the name the server's "
                "certificate must be valid for"
            )
        # Checked as Twisted's TLS checks it, which would otherwise fail only
        # once it connects.
        name = self.serverName()
        problem = hostNameProblem(name)
        if problem is not None:
            raise usage.UsageError(
                f"the TLS server name {name!r} is not a host name or an IP address ({problem}); "
                "--server-name sets it"
            )

    def _checkProbe(self) -> None:
        if self["count"] is None:
            for option in ("interval", "keep-open", "json", "tally", "metrics"):
                if self[option]:
                    raise usage.UsageError(f"--{option} needs --count")
            return
        if self["interval"] is None:
            self["interval"] = DEFAULT_INTERVAL
        if self["metrics"] is not None:
            self._checkMetrics(self["metrics"])
        if self["keep-open"]:
            try:
                checkKeepOpen(self["framing"])
            except ValueError as e:
                raise usage.UsageError(str(e)) from None

    def _checkMetrics(self, description: str) -> None:
        if self["json"]:
            raise usage.UsageError(
                "--json cannot be used with --metrics: it lists every probe, which an "
                "exporter cannot keep for as long as it runs; /metrics is its output"
            )
        try:
            # Parsing builds the endpoint without touching the reactor.
            serverFromString(cast(Any, None), description)
        except Exception as e:
            raise usage.UsageError(
                f"bad --metrics {description!r}: {e} (an endpoint looks like "
                "tcp:9465:interface=127.0.0.1)"
            ) from None

    def _checkRetries(self) -> None:
        if self["retries"] is None:
            for option in ("backoff", "backoff-max"):
                if self[option] is not None:
                    raise usage.UsageError(f"--{option} needs --retries")
            self["retries"] = DEFAULT_RETRIES
        if self["backoff"] is None:
            self["backoff"] = DEFAULT_BACKOFF
        if self["backoff-max"] is None:
            self["backoff-max"] = max(DEFAULT_BACKOFF_MAX, self["backoff"])
        if self["backoff-max"] < self["backoff"]:
            raise usage.UsageError(
                f"--backoff-max {self['backoff-max']:g} is less than --backoff "
                f"{self['backoff']:g}"
            )

    def lookupHost(self) -> str | None:
        """
        The host name the client looks up: the host of a C{tcp:}, C{tcp6:}
        or C{ssl:} C{--connect} string, or C{--host}; C{None} for another
        C{--connect} kind.
        """
        if self.webSocket is not None:
            return self.webSocket.host
        if self["connect"]:
            return None if self.connectTarget is None else self.connectTarget.host
        return str(self["host"])

    def serverName(self) -> str:
        """
        The name the server's TLS certificate must be valid for:
        C{--server-name}, or the host connected to.
        """
        if self["server-name"] is not None:
            return str(self["server-name"])
        return str(self.lookupHost() or self["host"])
