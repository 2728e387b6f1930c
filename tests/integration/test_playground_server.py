"""
The playground (C{--web}) and C{--trace} of a real server process, over
real loopback sockets: the API the page uses, its stream, its origin
checks, a browser that stops reading, and the trace log.

Every wait is bounded: sockets have timeouts, and polls have deadlines.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support.servers import (
    EPHEMERAL,
    HELLO,
    JSON_TWISTD,
    LOOPBACK,
    SERVER,
    SOCKET_TIMEOUT,
    TWISTD,
    ServerPool,
    ServerProcess,
    assertUsageError,
    connect,
    run,
    tutorialClient,
)

WEB = "tcp:0:interface=127.0.0.1"
_SERVING = re.compile(r"Serving the playground on tcp:127\.0\.0\.1:(\d+) ")

# The send panel's reply timeout is 5 s: a framing mismatch answers within
# this.
MISMATCH_WITHIN = 6.5


def playground(
    servers: ServerPool, *args: str, runner: list[str] = TWISTD
) -> tuple[ServerProcess, int]:
    """
    A server with the playground on an ephemeral loopback port.

    @param runner: how the server runs: C{twistd -n sockplay} by default.
    @return: the server (its echo port in C{port}), and the playground's
        port.
    """
    server = servers.start(runner, "--web", WEB, *args)
    for line in server.output:
        match = _SERVING.search(line)
        if match:
            return server, int(match.group(1))
    pytest.fail(f"the server did not say where the playground is:\n{server.transcript()}")


def call(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """
    One request to the playground, as its page makes it: the status, the
    headers and the JSON answer.
    """
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=SOCKET_TIMEOUT)
    try:
        sent = {"Host": f"{LOOPBACK}:{port}", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        raw = response.read()
        return response.status, dict(response.getheaders()), json.loads(raw) if raw else None
    finally:
        connection.close()


def send(port: int, message: str = "Hello Server !", **fields: Any) -> dict[str, Any]:
    """
    The send panel's answer to one message.
    """
    body = {"message": message, "framing": "raw", "mode": "one-shot", "listener": 0,
            "session": "test", **fields}
    status, _, answer = call(port, "POST", "/api/send", body)
    assert status == 200, answer
    assert isinstance(answer, dict)
    return answer


def closedConnection(port: int, id: int, timeout: float = 5.0) -> dict[str, Any]:
    """
    Connection C{id}'s details once it is closed (polled, within
    C{timeout} seconds).
    """
    deadline = time.monotonic() + timeout
    while True:
        status, _, details = call(port, "GET", f"/api/connections/{id}")
        if status == 200 and details["connection"]["state"] == "closed":
            return dict(details)
        if time.monotonic() > deadline:
            pytest.fail(f"connection {id} not closed within {timeout} s: {status} {details}")
        time.sleep(0.05)


def kinds(details: dict[str, Any], side: str = "server") -> list[str]:
    return [
        f"state:{e['detail']}" if e["kind"] == "state" else e["kind"]
        for e in details["events"] if e["side"] == side
    ]


@pytest.mark.parametrize("runner", [TWISTD, SERVER], ids=["twistd", "python -m"])
def test_tutorialConversationIsTraced(servers: ServerPool, runner: list[str]) -> None:
    """
    The tutorial client's conversation is connection 1, with its events in
    order, its bytes and its outcome, under C{twistd -n sockplay} and
    C{python -m sockplay.server} alike.
    """
    server, web = playground(servers, runner=runner)
    reply, after = tutorialClient(server.port)
    assert (reply, after) == (b"Message received: Hello Server !", b"")
    details = closedConnection(web, 1)
    assert kinds(details) == [
        "connected", "state:reading", "chunk", "message", "reply", "state:replying",
        "state:closing", "half-close", "eof", "state:closed", "closed",
    ]
    chunk = details["events"][2]
    assert (chunk["size"], chunk["text"], chunk["more"]) == (14, "Hello Server !", False)
    assert [e["seq"] for e in details["events"]] == list(range(11))
    times = [e["t"] for e in details["events"]]
    assert times == sorted(times)
    summary = details["connection"]
    assert (summary["messages"], summary["bytesIn"], summary["bytesOut"], summary["outcome"]) == (
        1, 14, 32, "ok"
    )
    assert details["earlier"] == 0


def test_sendOneShot(servers: ServerPool) -> None:
    """
    The panel's one-shot send prints the tutorial's line, and both sides of
    its connection are in that connection's timeline.
    """
    _, web = playground(servers)
    answer = send(web)
    assert answer["ok"] is True
    assert answer["printed"] == "Response from the server: Message received: Hello Server !"
    assert answer["reply"] == "Message received: Hello Server !"
    assert (answer["reused"], answer["note"]) == (False, None)
    assert isinstance(answer["connection"], int)
    details = closedConnection(web, answer["connection"])
    assert details["connection"]["panel"] is True
    client = kinds(details, "client")
    assert client[:2] == ["connect", "send"]
    assert "receive" in client and "response" in client
    assert "message" in kinds(details)


def test_sendKeepOpenReusesTheConnection(servers: ServerPool) -> None:
    """
    Two keep-open sends of one session against a keep-open line server go
    over one connection: the second says it reused it.
    """
    _, web = playground(servers, "--keep-open", "--framing", "line")
    first = send(web, "one", framing="line", mode="keep-open", session="s1")
    second = send(web, "two", framing="line", mode="keep-open", session="s1")
    assert (first["ok"], second["ok"]) == (True, True)
    assert (first["reused"], second["reused"]) == (False, True)
    assert first["connection"] == second["connection"] is not None
    assert second["printed"] == "Response from the server: Message received: two"
    status, _, details = call(web, "GET", f"/api/connections/{first['connection']}")
    assert status == 200
    messages = [e["text"] for e in details["events"] if e["kind"] == "message"]
    assert messages == ["one", "two"]
    assert details["connection"]["state"] == "reading"


def test_sendKeepOpenToAOneShotServer(servers: ServerPool) -> None:
    """
    Keep-open against a one-shot server gets its reply, and a note that the
    server closed the connection.
    """
    _, web = playground(servers, "--framing", "line")
    answer = send(web, framing="line", mode="keep-open", session="s2")
    assert answer["ok"] is True
    assert answer["note"] == (
        "the server closed the connection after its reply: it keeps none open"
    )


def test_sendFramingMismatchTimesOut(servers: ServerPool) -> None:
    """
    An int32-framed message to a line server gets no reply: the panel says
    so, and what to do, within its timeout.
    """
    _, web = playground(servers, "--framing", "line")
    start = time.monotonic()
    answer = send(web, framing="int32")
    elapsed = time.monotonic() - start
    assert answer["ok"] is False
    assert answer["error"] == (
        "no reply within 5 s: does the server frame messages as int32? "
        "Choose the server's framing."
    )
    assert 4.5 < elapsed < MISMATCH_WITHIN


class Stream:
    """
    The playground's live stream, read as a browser's EventSource does.
    """

    def __init__(self, port: int, timeout: float = SOCKET_TIMEOUT) -> None:
        self.connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
        self.connection.request(
            "GET",
            "/api/events",
            headers={"Host": f"{LOOPBACK}:{port}", "Accept": "text/event-stream"},
        )
        self.response = self.connection.getresponse()
        assert self.response.status == 200
        assert self.response.getheader("content-type") == "text/event-stream; charset=utf-8"

    def next(self) -> tuple[str, Any]:
        """
        The next event's name and data.
        """
        name = None
        data = None
        while True:
            line = self.response.fp.readline()
            if not line:
                pytest.fail("the stream ended")
            line = line.rstrip(b"\r\n")
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                data = json.loads(line[6:])
            elif not line and name is not None:
                return name, data

    def close(self) -> None:
        self.connection.close()


def test_streamSnapshotThenUpdates(servers: ServerPool) -> None:
    """
    The stream starts with a snapshot (the server, its listeners, the
    bounds), then an update brings a new connection's events.
    """
    server, web = playground(servers)
    stream = Stream(web)
    try:
        name, snapshot = stream.next()
        assert name == "snapshot"
        assert snapshot["server"]["framing"] == "raw"
        assert snapshot["server"]["listeners"] == [
            {
                "index": 0,
                "name": f"tcp:127.0.0.1:{server.port}",
                "sendable": True,
                "why": None,
                "kind": "tcp",
            }
        ]
        assert snapshot["connections"] == []
        tutorialClient(server.port)
        deadline = time.monotonic() + 5.0
        seen: list[str] = []
        while "closed" not in seen:
            assert time.monotonic() < deadline, seen
            name, update = stream.next()
            assert name == "update"
            seen += [e["kind"] for e in update["events"] if e["conn"] == 1]
        assert seen[:4] == ["connected", "state", "chunk", "message"]
    finally:
        stream.close()


def test_foreignHostOrOriginIs403(servers: ServerPool) -> None:
    """
    A request for another host name (DNS rebinding) or from another site's
    page is refused, the stream and the panel alike.
    """
    _, web = playground(servers)
    status, headers, answer = call(
        web, "GET", "/api/events", headers={"Host": f"evil.example:{web}"}
    )
    assert status == 403
    assert "not this playground's address" in answer["error"]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    status, _, answer = call(
        web, "POST", "/api/send", {"message": "x", "framing": "raw", "mode": "one-shot"},
        headers={"Origin": "http://evil.example"},
    )
    assert (status, answer) == (403, {"error": "cross-origin requests are refused"})


def test_streamThatIsNotReadIsDropped(servers: ServerPool) -> None:
    """
    A browser that opens the stream and never reads it is dropped once its
    buffers are full, within bounded time; the server keeps serving: a
    new stream and the tutorial client work.
    """
    server, web = playground(servers, "--keep-open", "--framing", "line")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.settimeout(SOCKET_TIMEOUT)
    stalled.connect((LOOPBACK, web))
    stalled.sendall(
        f"GET /api/events HTTP/1.1\r\nHost: {LOOPBACK}:{web}\r\n\r\n".encode()
    )
    busy = connect(server.port)
    stop = threading.Event()

    def load() -> None:
        # Many events: each line is a chunk, a message and a reply.
        burst = b"x" * 60 + b"\n"
        try:
            while not stop.is_set():
                busy.sendall(burst * 50)
                received = 0
                while received < 50 * (len(burst) + 18):
                    received += len(busy.recv(65536))
        except OSError:
            pass

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        deadline = time.monotonic() + 45.0
        while not droppedByPeer(stalled):
            if time.monotonic() > deadline:
                pytest.fail("a stream that is never read was not dropped within 45 s")
            time.sleep(0.2)
    finally:
        stop.set()
        loader.join(timeout=SOCKET_TIMEOUT)
        busy.close()
        stalled.close()
    stream = Stream(web)
    try:
        assert stream.next()[0] == "snapshot"
    finally:
        stream.close()
    with connect(server.port) as sock:
        sock.sendall(HELLO + b"\n")
        assert sock.recv(1024) == b"Message received: Hello Server !\n"


def droppedByPeer(sock: socket.socket) -> bool:
    """
    Whether C{sock}'s peer has reset or closed it (Linux's TCP_INFO state:
    CLOSE or CLOSE_WAIT), without reading from it.
    """
    state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    return state in (7, 8)


def test_traceWithoutWeb(servers: ServerPool) -> None:
    """
    C{--trace} alone logs one line per event of a tutorial client's
    conversation, in order, and serves no playground.
    """
    server = servers.start(TWISTD, "--trace")
    tutorialClient(server.port)
    server.waitForLine(lambda line: "connection lost" in line, "the connection's close")
    traced = re.compile(r"\] #1 (tcp:127\.0\.0\.1:\d+) \+\d+\.\d{3} ms (.*)$")
    matches = [m for m in map(traced.search, (line.rstrip() for line in server.output)) if m]
    described = [m.group(2) for m in matches]
    assert described[:4] == [
        f"connected (from {matches[0].group(1)} on tcp:127.0.0.1:{server.port})",
        "state: reading",
        "dataReceived: 14 bytes 'Hello Server !'",
        "message complete: 14 bytes 'Hello Server !'",
    ]
    assert described[4] == "written: 32 bytes 'Message received: Hello Server !'"
    assert described[-1].startswith("connection lost (Connection was closed cleanly")
    assert len(described) == 11
    assert not any("playground" in line for line in server.output)


def test_traceJSON(servers: ServerPool) -> None:
    """
    With the JSON logger, each trace event is a structured record: its
    kind, size, preview and hex.
    """
    server = servers.start(JSON_TWISTD, "--trace")
    tutorialClient(server.port)
    server.waitForLine(lambda line: '"kind": "closed"' in line, "the connection's close")
    records = [json.loads(line) for line in server.output if line.startswith("{")]
    traced = [r for r in records if r.get("event") == "trace"]
    assert [r["kind"] for r in traced] == [
        "connected", "state", "chunk", "message", "reply", "state", "state", "half-close",
        "eof", "state", "closed",
    ]
    chunk = traced[2]
    assert (chunk["size"], chunk["preview"], chunk["hex"]) == (
        14, "Hello Server !", HELLO.hex(" ")
    )
    assert chunk["text"].endswith("dataReceived: 14 bytes 'Hello Server !'")
    assert {r["connection"] for r in traced} == {1}


def test_webWithWorkersIsAUsageError(tmp_path: Path) -> None:
    """
    C{--web} shows one process's connections: with C{--workers 2} it is a
    usage error, one line, exit 2.
    """
    result = run([*TWISTD, "--web", WEB, "--workers", "2", "--listen", EPHEMERAL], tmp_path)
    assertUsageError(
        result,
        "--web cannot be used with --workers: it shows one process's connections; "
        "drop --workers",
        "twistd sockplay",
    )

