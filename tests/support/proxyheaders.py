"""
Hostile PROXY protocol v1 headers, shared by the unit tests of the header
wrapper and the hostile-peer suite: each breaks a rule of the
specification in a way that once got through.
"""

from __future__ import annotations

import pytest

__all__ = ["ESCAPE", "MALFORMED_V1"]

# Bytes a terminal acts on: they must never reach a log line.
ESCAPE = b"\x1b[31mINJECTED"

# Each as a pytest parameter, with an id that says what is wrong with it.
MALFORMED_V1 = [
    pytest.param(b"PROXY TCP4 " + ESCAPE + b" 5.6.7.8 1 2\r\n", id="escape-bytes"),
    pytest.param(b"PROXY TCP4 not-an-ip 5.6.7.8 1 2\r\n", id="not-an-ip"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n", id="port-99999"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 abc 2\r\n", id="port-not-numeric"),
    pytest.param(b"PROXY TCP4 \xff\xfe.1.1.1 5.6.7.8 1 2\r\n", id="address-not-utf8"),
]
