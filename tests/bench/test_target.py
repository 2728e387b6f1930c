"""
Tests for L{sockplay.bench.target}: C{--connect} endpoint strings.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from sockplay.bench.target import BenchError, parseEndpoint


@pytest.mark.parametrize(
    "description, expected",
    [
        ("tcp:host=127.0.0.1:port=8000", (socket.AF_INET, ("127.0.0.1", 8000))),
        ("tcp:127.0.0.1:8000", (socket.AF_INET, ("127.0.0.1", 8000))),
        ("tcp:127.0.0.1:8000:timeout=5", (socket.AF_INET, ("127.0.0.1", 8000))),
        ("tcp6:host=\\:\\:1:port=8000", (socket.AF_INET6, ("::1", 8000, 0, 0))),
        ("unix:path=/run/sockplay.sock", (socket.AF_UNIX, "/run/sockplay.sock")),
        ("unix:/run/sockplay.sock", (socket.AF_UNIX, "/run/sockplay.sock")),
    ],
)
def test_parseEndpoint(description: str, expected: tuple[int, Any]) -> None:
    """
    C{--connect} takes Twisted's tcp, tcp6 and unix client endpoint strings,
    positional or named arguments, escaped colons included.
    """
    assert parseEndpoint(description) == expected


@pytest.mark.parametrize(
    "description, message",
    [
        ("ssl:host=a:port=1", "supports tcp:, tcp6: and unix:"),
        ("tcp:host=127.0.0.1", "no port"),
        ("tcp:host=127.0.0.1:port=http", "bad port 'http'"),
        ("tcp:host=127.0.0.1:port=1:bindAddress=x", "unexpected 'bindAddress=x'"),
    ],
)
def test_badEndpoint(description: str, message: str) -> None:
    """
    Endpoints the generator cannot use are refused with a one-line reason.
    """
    with pytest.raises(BenchError) as caught:
        parseEndpoint(description)
    assert message in str(caught.value)
