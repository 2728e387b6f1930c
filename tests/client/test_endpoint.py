"""
Tests for L{sockplay.client.endpoint}: the endpoint the options name, and
the one line for an endpoint that cannot be made.
"""

from __future__ import annotations

import sys

import pytest
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.testing import MemoryReactorClock

from sockplay.client.endpoint import makeEndpoint
from sockplay.client.failures import ClientError
from sockplay.client.options import Options


def options(*argv: str) -> Options:
    config = Options()
    config.parseOptions(list(argv))
    return config


def test_hostAndPort() -> None:
    """
    Without C{--connect}, the endpoint is C{--host} and C{--port}, by name
    or address.
    """
    endpoint = makeEndpoint(MemoryReactorClock(), options("--host", "localhost"))
    assert isinstance(endpoint, HostnameEndpoint)


def test_badConnectString() -> None:
    """
    A C{--connect} string of a kind Twisted does not know is one line that
    says it cannot be parsed and what one looks like, with the status of a
    usage error.
    """
    with pytest.raises(ClientError) as raised:
        makeEndpoint(MemoryReactorClock(), options("--connect", "foo:bar"))
    assert str(raised.value) == (
        "cannot parse --connect 'foo:bar': Unknown endpoint type: 'foo'; "
        "an endpoint looks like tcp:host=...:port=..."
    )
    assert raised.value.status == 2


def test_tlsSupportMissing(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    If TLS support cannot be imported, C{--tls} is one line that says what
    is missing and what to install, not a traceback.
    """
    monkeypatch.setitem(sys.modules, "sockplay.client.tls", None)
    with pytest.raises(ClientError) as raised:
        makeEndpoint(MemoryReactorClock(), options("--tls"))
    assert str(raised.value) == (
        "TLS needs Twisted's TLS support (sockplay.client.tls is missing): "
        "pip install sockplay (it includes TLS)"
    )


def test_unreadableCA() -> None:
    """
    A C{--ca} file that cannot be used is one line naming it.
    """
    with pytest.raises(ClientError, match=r"cannot read --ca /nonexistent/ca\.pem"):
        makeEndpoint(MemoryReactorClock(), options("--tls", "--ca", "/nonexistent/ca.pem"))
