"""
What the WebSocket frames of one direction of a connection say, read from
their headers (no I/O): how big the message now arriving is, which lets
the server refuse a message over C{--max-message} before it is buffered;
and the code and reason of a close frame, which Twisted's WebSocket
support does not pass on, and which the client reports (1009: the message
was too long for the server).

Twisted's WebSocket support (on C{wsproto}) reassembles a message's frames
in memory, with no bound, before handing the whole message over. The server
puts L{FrameScanner} in front of it: it reads each frame's header (RFC 6455,
section 5.2), adds up the payload lengths of a message's data frames, and
says so as soon as a header announces more than the limit, so the server can
close with code 1009 without reading the rest. Shared by the server and
the client; imports nothing of sockplay's own.
"""

from __future__ import annotations

__all__ = ["FrameScanner"]

_CLOSE = 0x8
# The opcodes of data frames: continuation, text, binary. Control frames
# (close, ping, pong) are at most 125 bytes and belong to no message.
_DATA_OPCODES = (0x0, 0x1, 0x2)
# Bytes of extended payload length, by the 7-bit length field's value.
_EXTENDED = {126: 2, 127: 8}
_MASK_KEY = 4


class FrameScanner:
    """
    Reads the frames of one WebSocket connection's client-to-server bytes
    and tells when the message being received would exceed C{limit} bytes
    of payload.

    @ivar limit: the largest message payload allowed, in bytes.
    @ivar messageSize: the payload bytes announced so far for the message
        being received (0 between messages).
    @ivar closeCode: the status code of the first close frame read, once
        it is whole (1005, as RFC 6455 says, for one that gives none);
        C{None} before.
    @ivar closeReason: that close frame's reason, as text.
    @ivar overAt: once L{feed} said over, where in the bytes it was given
        the frame that went over the limit began (0 if in earlier bytes):
        what comes before it is whole frames, to be read as usual.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.messageSize = 0
        self._header = bytearray()
        # Payload bytes of the current frame still to come.
        self._remaining = 0
        # Whether the current frame ends a message (a data frame with FIN).
        self._endsMessage = False
        # A close frame's payload as it arrives (at most 125 bytes), and its
        # masking key; None while the current frame is not a close frame.
        self._close: bytearray | None = None
        self._closeMask = b""
        self.closeCode: int | None = None
        self.closeReason = ""
        self.overAt = 0

    def feed(self, data: bytes) -> bool:
        """
        Read C{data}, the next bytes from the client.

        @return: C{True} once a frame header makes the message being
            received longer than L{limit}; the connection should then be
            closed, and nothing more fed.
        """
        position, end = 0, len(data)
        # Where the frame header being read began (0: in earlier bytes).
        headerStart = 0
        while position < end:
            if self._remaining:
                taken = min(self._remaining, end - position)
                if self._close is not None:
                    self._close += data[position : position + taken]
                self._remaining -= taken
                position += taken
                if not self._remaining:
                    self._frameEnded()
                continue
            if not self._header:
                headerStart = position
            needed = self._headerLength() - len(self._header)
            self._header += data[position : position + needed]
            position += needed
            if len(self._header) < self._headerLength():
                # Either the header is cut short, or its first two bytes
                # just arrived and say it is longer: read on.
                continue
            if self._headerRead():
                self.overAt = headerStart
                return True
        return False

    def _headerLength(self) -> int:
        """
        How long the current frame's header is, as far as its bytes so far
        tell: 2 until the second byte is in.
        """
        header = self._header
        if len(header) < 2:
            return 2
        length = header[1] & 0x7F
        return 2 + _EXTENDED.get(length, 0) + (_MASK_KEY if header[1] & 0x80 else 0)

    def _headerRead(self) -> bool:
        """
        A whole frame header is in: account for its payload.

        @return: whether the message is now over the limit.
        """
        header, self._header = self._header, bytearray()
        opcode = header[0] & 0x0F
        length = header[1] & 0x7F
        extended = _EXTENDED.get(length)
        if extended is not None:
            length = int.from_bytes(header[2 : 2 + extended], "big")
        data = opcode in _DATA_OPCODES
        if data:
            self.messageSize += length
            if self.messageSize > self.limit:
                return True
        self._endsMessage = data and bool(header[0] & 0x80)
        if opcode == _CLOSE and self.closeCode is None:
            self._close = bytearray()
            self._closeMask = bytes(header[-_MASK_KEY:]) if header[1] & 0x80 else b""
        self._remaining = length
        if not length:
            self._frameEnded()
        return False

    def _frameEnded(self) -> None:
        if self._endsMessage:
            self.messageSize = 0
            self._endsMessage = False
        close, self._close = self._close, None
        if close is not None:
            mask = self._closeMask
            if mask:
                close = bytearray(byte ^ mask[i % _MASK_KEY] for i, byte in enumerate(close))
            self.closeCode = int.from_bytes(close[:2], "big") if len(close) >= 2 else 1005
            self.closeReason = bytes(close[2:]).decode("utf-8", "replace")
