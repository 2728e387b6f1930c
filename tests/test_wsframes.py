"""
L{sockplay.wsframes.FrameScanner}: the size of the message being received
and a close frame's code, read from frame headers however the bytes are
split; checked against wsproto's own frames.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol

from sockplay.wsframes import FrameScanner

# A message as the client sends it: its fragments' payloads.
messages = st.lists(st.binary(max_size=300), min_size=1, max_size=4)


def clientFrames(fragments: list[bytes], ping: bool = False) -> bytes:
    """
    One binary message in C{fragments}, masked as a client sends them,
    with a ping between the first two if asked.
    """
    frames = FrameProtocol(client=True, extensions=[])
    data = b""
    for index, fragment in enumerate(fragments):
        data += frames.send_data(fragment, fin=index == len(fragments) - 1)
        if ping and index == 0:
            data += frames.ping(b"are you there")
    return data


def feedSplit(scanner: FrameScanner, data: bytes, cuts: list[int]) -> bool:
    """
    Feed C{data} in pieces cut at C{cuts}; whether the scanner said over.
    """
    over = False
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        over = scanner.feed(data[start:cut]) or over
        start = cut
    return over


@given(messages, st.lists(st.integers(0, 2000)), st.integers(1, 1200), st.booleans())
def test_overOnlyIfTheMessageIs(
    fragments: list[bytes], cuts: list[int], limit: int, ping: bool
) -> None:
    """
    However the bytes are split, and with a ping between fragments, the
    scanner says over exactly when the message's payload is over the
    limit; after a message that is not, it counts from 0 again.
    """
    data = clientFrames(fragments, ping)
    scanner = FrameScanner(limit)
    size = sum(len(fragment) for fragment in fragments)
    over = feedSplit(scanner, data, [cut for cut in cuts if cut < len(data)])
    assert over == (size > limit)
    if not over:
        assert scanner.messageSize == 0


def test_hugeHeaderRefusedAtOnce() -> None:
    """
    A header that announces 2**63 - 1 bytes is over the limit as soon as it
    is read, with no payload.
    """
    scanner = FrameScanner(65536)
    small = FrameProtocol(client=True, extensions=[]).send_data(b"ok", fin=True)
    assert scanner.feed(small + b"\x82\xff" + (2**63 - 1).to_bytes(8, "big") + b"mask")
    # The whole frame before it is read as usual.
    assert scanner.overAt == len(small)


# 1005, 1006 and 1015 are never sent (RFC 6455, section 7.4.1).
@given(
    st.integers(1000, 4999).filter(lambda code: code not in (1005, 1006, 1015)),
    st.text(max_size=30),
    st.lists(st.integers(0, 40)),
)
def test_closeCodeAndReason(code: int, reason: str, cuts: list[int]) -> None:
    """
    A close frame's code and reason are read, masked or not, however split.
    """
    for client in (True, False):
        data = FrameProtocol(client=client, extensions=[]).close(code, reason)
        scanner = FrameScanner(10)
        assert not feedSplit(scanner, data, [cut for cut in cuts if cut < len(data)])
        assert (scanner.closeCode, scanner.closeReason) == (code, reason)


def test_closeWithoutCode() -> None:
    """
    A close frame with no payload reads as 1005 (no status), as RFC 6455
    says.
    """
    scanner = FrameScanner(10)
    scanner.feed(b"\x88\x00")
    assert (scanner.closeCode, scanner.closeReason) == (1005, "")
