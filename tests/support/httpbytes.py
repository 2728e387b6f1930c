"""
HTTP requests and responses as bytes, for tests that drive a site's
channel on an in-memory transport.
"""

from __future__ import annotations

import json
from typing import Any

# The Host of a request to a site on 127.0.0.1:8080.
ORIGIN = b"127.0.0.1:8080"


def request(
    method: bytes, path: bytes, *headers: bytes, host: bytes = ORIGIN, body: bytes = b""
) -> bytes:
    """
    One HTTP/1.1 request's bytes, with C{Host: host}, C{headers} and a
    C{body} (with its C{Content-Length}) if any.
    """
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: " + host, *headers]
    if body:
        lines.append(b"Content-Length: %d" % (len(body),))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Response:
    """
    A response as the site wrote it: status, headers and body.
    """

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split(b" ")[1]) if lines[0] else 0
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers[name.strip().lower()] = value.strip()
        if self.headers.get(b"transfer-encoding") == b"chunked":
            self.body = _unchunk(self.body)

    def json(self) -> Any:
        return json.loads(self.body)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        length = int(size, 16)
        if not length:
            break
        out += rest[:length]
        data = rest[length + 2:]
    return out
