"""
An asyncio echo-reply server with sockplay's wire behaviour, for comparison.

The same four framings, one-shot or --keep-open, the same prefix and size
limit, the same close sequence (half-close after the last reply, drain,
close when the client does or after 5 s). --uvloop runs it on uvloop
instead of asyncio's own loop.

It is written as fast as asyncio allows for that behaviour, as sockplay's
server is: each read is framed and answered in one pass through the batch
path of sockplay's framing module (L{Framer.feedReplies}, the one
sockplay's C{dataReceived} uses), with one C{transport.write} per read.
So what a comparison measures is the event loop and the protocol layer,
not the parsing. asyncio's own defaults stay (C{TCP_NODELAY} on, its write
flow control), and the reading pauses while the write buffer is full, as
sockplay's does.

It prints "Listening on tcp:HOST:PORT" once it listens (port 0 picks a free
one) and stops on SIGINT or SIGTERM.

    python benchmarks/asyncio_server.py --port 0 --framing line --keep-open
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from sockplay.framing import (
    DEFAULT_MAX_MESSAGE,
    FRAMINGS,
    MessageError,
    MessageTooLong,
    makeFramer,
)

# Seconds to wait, after half-closing, for the client to close (as sockplay).
LINGER = 5.0


def errorText(error: MessageError) -> str:
    """
    The text of the error reply to a message that cannot be answered, as
    sockplay words it.
    """
    if isinstance(error, MessageTooLong):
        return f"message too long (limit {error.limit} bytes)"
    return str(error)


class EchoReply(asyncio.Protocol):
    """
    One connection: frame its input, answer each message.
    """

    def __init__(self, settings: argparse.Namespace) -> None:
        self.settings = settings
        self.prefix: bytes = settings.prefix
        # Most messages answered before closing: 1 one-shot, 0 for no limit.
        self.limit = 0 if settings.keep_open else 1
        self.framer = makeFramer(settings.framing, settings.max_message)
        self.feedReplies = self.framer.feedReplies
        self.transport: Any = None
        self.write: Any = None
        self.done = False
        self.linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.write = transport.write

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        replies, count, error = self.feedReplies(data, self.prefix, self.limit)
        if count:
            self.write(replies)
            if self.limit:
                self.finish()
                return
        if error is not None:
            self.sendError(errorText(error))
            self.finish()

    def eof_received(self) -> bool:
        if not self.done:
            try:
                last = self.framer.finish()
            except MessageError as e:
                self.sendError(errorText(e))
            else:
                if last is not None:
                    self.write(self.framer.encodeReplies(self.prefix, [last]))
            self.done = True
        # Close once the replies are written.
        self.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.linger is not None:
            self.linger.cancel()

    def pause_writing(self) -> None:
        # A client that sends without reading: stop reading until it does.
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def sendError(self, text: str) -> None:
        data = ("Error: " + text).encode()
        if self.settings.framing in ("raw", "eof"):
            data += b"\n"
        self.write(self.framer.encode(data, b"\n"))

    def finish(self) -> None:
        """
        Half-close after the reply, drain, close when the client does.
        """
        self.done = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
            loop = asyncio.get_running_loop()
            self.linger = loop.call_later(LINGER, self.transport.abort)
        else:
            self.transport.close()


async def serve(settings: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: EchoReply(settings), settings.host, settings.port, backlog=settings.backlog
    )
    host, port = server.sockets[0].getsockname()[:2]
    print(f"Listening on tcp:{host}:{port}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12345)
    parser.add_argument("--framing", choices=list(FRAMINGS), default="raw")
    parser.add_argument("--keep-open", action="store_true")
    parser.add_argument("--prefix", default="Message received: ")
    parser.add_argument("--max-message", type=int, default=DEFAULT_MAX_MESSAGE)
    parser.add_argument("--backlog", type=int, default=100)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    settings = parser.parse_args(argv)
    if settings.keep_open and settings.framing == "eof":
        parser.error("--keep-open cannot be used with --framing eof")
    settings.prefix = settings.prefix.encode("utf-8", "surrogateescape")
    if settings.uvloop:
        try:
            import uvloop
        except ImportError:
            print("Error: --uvloop needs the uvloop package: pip install 'sockplay[bench]'",
                  file=sys.stderr)
            sys.exit(1)
        uvloop.run(serve(settings))
    else:
        asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
