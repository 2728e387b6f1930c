"""
The playground (C{--web}) in a real browser, against a real C{twistd}
process each: the page loads clean, shows connections and their events
live, runs the send panel, shows client bytes as text and never as markup,
makes a split message plain to see, and stays responsive under the bench.

Nothing sleeps: the tests wait on the page (Playwright's C{expect},
C{wait_for_function}), each wait bounded.

Debian's Chromium is driven by Playwright (never Playwright's own browser
download): the test extra installs Playwright, and C{.ci/run} installs
Chromium with apt. Without Chromium the tests fail in CI, and elsewhere
are skipped, naming the package to install (as the deploy tests' tools).

C{SOCKPLAY_SCREENSHOT=/path/playground.png} makes
L{test_tutorialConversationScreenshot} save its screenshot there (how
C{docs/playground.png} is made).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from support.servers import (
    DEADLINE,
    EPHEMERAL,
    HELLO,
    TWISTD,
    ServerPool,
    ServerProcess,
    connect,
    readToEOF,
)
from support.websocket import webSocketPorts

# Debian's package; CI installs it with apt.
CHROMIUM = "/usr/bin/chromium"

# The server, as the tests start it (always with --web on an ephemeral port).
PLAYGROUND_SERVER = TWISTD

# The viewport: what the screenshot in the docs shows.
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}

# Milliseconds allowed for anything the page must show once the server has
# done it: the stream's 0.2 s update interval and a slow, shared machine.
SHOWN = 2000

# Milliseconds allowed for the page to load and say its stream is live.
LOADED = 10000

_SERVING = re.compile(r"Serving the playground on tcp:127\.0\.0\.1:(\d+) ")


@dataclass
class Playground:
    """
    A server with the playground on, and a browser page open on it.

    @ivar server: the server process; C{server.port} is its echo listener.
    @ivar webPort: the playground site's port.
    @ivar page: the page, loaded, its stream live.
    @ivar errors: every console error and uncaught page error so far.
    """

    server: ServerProcess
    webPort: int
    page: Page
    errors: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """
        The page's address.
        """
        return f"http://127.0.0.1:{self.webPort}/"


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """
    One headless Chromium for the whole session (as root, hence no sandbox).
    """
    if not Path(CHROMIUM).exists():
        # As for the deploy tests' tools: CI installs it (.ci/run), so
        # there a missing browser fails; elsewhere the tests say what to
        # install.
        if os.environ.get("CI"):
            pytest.fail(f"Chromium is missing ({CHROMIUM}): apt-get install -y chromium")
        pytest.skip(f"Chromium is not installed ({CHROMIUM}; Debian package chromium)")
    manager = sync_playwright().start()
    try:
        launched = manager.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
        )
        try:
            yield launched
        finally:
            launched.close()
    finally:
        manager.stop()


def startPlayground(servers: ServerPool, *args: str) -> tuple[ServerProcess, int]:
    """
    A server with C{--web} on an ephemeral loopback port, and C{args}.

    @return: the server, and the playground site's port, read from its
        start-up lines.
    """
    server = servers.start(PLAYGROUND_SERVER, "--web", EPHEMERAL, *args)
    for line in server.output:
        if match := _SERVING.search(line):
            return server, int(match.group(1))
    pytest.fail(f"the server did not say where it serves the playground:\n{server.transcript()}")


@pytest.fixture
def openPlayground(
    servers: ServerPool, browser: Browser
) -> Iterator[Callable[..., Playground]]:
    """
    Start a server with the given options and open the page on it, its
    stream live; the page's errors are collected from the start.
    """
    contexts = []

    def start(*args: str) -> Playground:
        server, webPort = startPlayground(servers, *args)
        context = browser.new_context(viewport=VIEWPORT)
        contexts.append(context)
        page = context.new_page()
        playground = Playground(server, webPort, page)

        def console(message: ConsoleMessage) -> None:
            if message.type == "error":
                where = message.location.get("url", "")
                playground.errors.append(f"console: {message.text} ({where})")

        page.on("console", console)
        page.on("pageerror", lambda error: playground.errors.append(f"page error: {error}"))
        page.set_default_timeout(LOADED)
        page.goto(playground.url)
        expect(page.locator("#stream-status")).to_have_text("live", timeout=LOADED)
        return playground

    try:
        yield start
    finally:
        for context in contexts:
            context.close()


# The reply line the tutorial client prints for its default message.
HELLO_PRINTED = "Response from the server: Message received: Hello Server !"

# Messages that would run script if the page parsed client bytes as markup.
ALERT_MARKUP = "<img src=x onerror=alert(1)>"
FLAG_MARKUP = '<img src=x onerror="window.__xss=1">'

# How long the bench runs, and the longest a page evaluation may take
# meanwhile (milliseconds are what a learner notices; a second is a hang).
BENCH_SECONDS = 5
RESPONSIVE = 1.0

OpenPlayground = Callable[..., Playground]

# Chromium's console error for a connection already pruned (a 404).
_PRUNED = re.compile(r"status of 404 .*\(http://127\.0\.0\.1:\d+/api/connections/\d+\)$")

# Rows of the selected connection's timeline.
CLIENT_RESPONSE = '#timeline li.event[data-side="client"][data-kind="response"]'
SERVER_MESSAGE = '#timeline li.event[data-side="server"][data-kind="message"]'
SERVER_CLOSED = '#timeline li.event[data-side="server"][data-kind="closed"]'

# The page's message counter, as a number.
MESSAGES_SHOWN = 'Number(document.getElementById("count-messages").textContent.replace(/,/g, ""))'


def tutorialClient(port: int, *args: str) -> str:
    """
    Run the tutorial client (C{python -m sockplay.client}) against C{port}.

    @return: what it printed.
    """
    result = subprocess.run(
        [sys.executable, "-m", "sockplay.client", "--port", str(port), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=True,
    )
    return result.stdout


def send(page: Page, message: str) -> None:
    """
    Type C{message} in the send panel and press Enter.
    """
    page.fill("#send-message", message)
    page.press("#send-message", "Enter")


def timelineKinds(page: Page, *kinds: str) -> list[str]:
    """
    The kinds of the selected connection's server-side events, in order,
    keeping only C{kinds}.
    """
    found: list[str] = page.eval_on_selector_all(
        '#timeline li.event[data-side="server"]', "rows => rows.map(row => row.dataset.kind)"
    )
    return [kind for kind in found if kind in kinds]


def test_pageLoadsWithoutErrors(openPlayground: OpenPlayground) -> None:
    """
    The page loads, its stream goes live, it shows the server's counters
    and its sendable listener, with no console error and no uncaught
    exception: no resource refused by the strict Content-Security-Policy,
    none missing, no script error.
    """
    playground = openPlayground()
    page = playground.page
    expect(page.locator("#count-open")).to_have_text("0")
    expect(page.locator("#count-total")).to_have_text("0")
    expect(page.locator("#send-listener option:not([disabled])")).to_have_count(1)
    expect(page.locator("#send-listener option")).to_have_text(
        [f"tcp:127.0.0.1:{playground.server.port}"]
    )
    expect(page.locator("#send-button")).to_be_enabled()
    # Both charts were drawn (a canvas with an error in its script stays blank).
    drawn = page.evaluate(
        """() => ["chart-rate", "chart-sizes"].map(id => {
             const canvas = document.getElementById(id);
             const context = canvas.getContext("2d");
             const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
             return pixels.some(value => value !== 0);
           })"""
    )
    assert drawn == [True, True]
    assert playground.errors == []


def test_clientAppearsLive(openPlayground: OpenPlayground) -> None:
    """
    A tutorial client's connection appears in the list, with its message,
    reply and close, and its timeline is shown (the newest connection is
    followed), within 2 s and without a reload of the page.
    """
    playground = openPlayground()
    page = playground.page
    page.evaluate("window.__sameDocument = true")
    assert tutorialClient(playground.server.port) == HELLO_PRINTED + "\n"
    row = page.locator("#connections tbody tr").first
    expect(row.locator("td.messages")).to_have_text("1", timeout=SHOWN)
    expect(row.locator("td.peer")).to_contain_text("tcp:127.0.0.1:", timeout=SHOWN)
    expect(row.locator("td.listener")).to_have_text(f"tcp:127.0.0.1:{playground.server.port}")
    expect(row.locator("td.framing")).to_have_text("raw")
    expect(row.locator("td.state")).to_have_text("closed", timeout=SHOWN)
    expect(row.locator("td.bytes-in")).to_have_text(str(len(HELLO)))
    expect(row).to_have_class(re.compile(r"\bselected\b"), timeout=SHOWN)
    message = page.locator('#timeline li.event[data-kind="message"]')
    expect(message.locator(".text")).to_have_text(HELLO.decode(), timeout=SHOWN)
    expect(message.locator(".label")).to_have_text("message complete: 14 bytes")
    expect(page.locator('#timeline li.event[data-kind="reply"] .text')).to_have_text(
        "Message received: Hello Server !"
    )
    expect(page.locator(SERVER_CLOSED)).to_have_count(1, timeout=SHOWN)
    expect(page.locator("#count-total")).to_have_text("1", timeout=SHOWN)
    expect(page.locator("#count-messages")).to_have_text("1", timeout=SHOWN)
    assert page.evaluate("window.__sameDocument") is True
    assert playground.errors == []


def test_sendPanelReply(openPlayground: OpenPlayground) -> None:
    """
    The send panel's default message gets the tutorial's reply line, and
    both sides of that conversation show in the timeline: the client's
    connect, send, response, and the server's chunk, message and reply.
    The button is disabled while the send is in flight, and enabled after.
    """
    playground = openPlayground()
    page = playground.page
    expect(page.locator("#send-message")).to_have_value(HELLO.decode())
    page.click("#send-button")
    expect(page.locator("#send-result")).to_have_text(HELLO_PRINTED, timeout=SHOWN * 3)
    expect(page.locator("#send-error")).to_have_text("")
    expect(page.locator("#send-button")).to_be_enabled()
    timeline = page.locator("#timeline")
    expect(timeline.locator('li.event[data-side="client"][data-kind="send"]')).to_have_count(
        1, timeout=SHOWN
    )
    expect(page.locator(f"{CLIENT_RESPONSE} .text")).to_have_text(HELLO_PRINTED, timeout=SHOWN)
    expect(page.locator(f"{SERVER_MESSAGE} .text")).to_have_text(HELLO.decode(), timeout=SHOWN)
    expect(timeline.locator('li.event[data-side="server"][data-kind="reply"]')).to_have_count(1)
    expect(page.locator("#connections tbody tr.selected.panel")).to_have_count(1, timeout=SHOWN)
    assert playground.errors == []


def test_markupShownLiterally(openPlayground: OpenPlayground) -> None:
    """
    Messages that are HTML with script in an attribute, sent by a raw
    socket and by the send panel, show literally as text in the timeline
    and the send result: no C{img} element is made, no dialog opens, and
    the script's flag is never set.
    """
    playground = openPlayground()
    page = playground.page
    dialogs: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    with connect(playground.server.port) as sock:
        sock.sendall(FLAG_MARKUP.encode())
        sock.shutdown(socket.SHUT_WR)
        assert readToEOF(sock) == b"Message received: " + FLAG_MARKUP.encode()
    expect(page.locator('#timeline li.event[data-kind="message"] .text')).to_have_text(
        FLAG_MARKUP, timeout=SHOWN
    )
    send(page, ALERT_MARKUP)
    printed = f"Response from the server: Message received: {ALERT_MARKUP}"
    expect(page.locator("#send-result")).to_have_text(printed, timeout=SHOWN * 3)
    expect(page.locator(f"{CLIENT_RESPONSE} .text")).to_have_text(printed, timeout=SHOWN)
    expect(page.locator('#timeline li.event[data-kind="message"] .text')).to_have_text(ALERT_MARKUP)
    assert page.locator("img").count() == 0
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert dialogs == []
    assert playground.errors == []


def test_splitMessageTwoChunksOneMessage(openPlayground: OpenPlayground) -> None:
    """
    With line framing, C{Hel} then C{lo\\n} on one connection (the second
    sent only once the page shows the first) show as two chunk rows, the
    bytes held waiting in between, then one message row of 5 bytes, made
    from both chunks.
    """
    playground = openPlayground("--framing", "line")
    page = playground.page
    timeline = page.locator("#timeline")
    with connect(playground.server.port) as sock:
        sock.sendall(b"Hel")
        expect(timeline.locator('li.event[data-kind="chunk"] .text')).to_have_text(
            ["Hel"], timeout=SHOWN
        )
        expect(timeline.locator('li.event[data-kind="partial"] .label')).to_have_text(
            ["waiting: 3 bytes held"], timeout=SHOWN
        )
        sock.sendall(b"lo\n")
        expect(timeline.locator('li.event[data-kind="message"]')).to_have_count(1, timeout=SHOWN)
        sock.shutdown(socket.SHUT_WR)
        assert readToEOF(sock) == b"Message received: Hello\n"
    assert timelineKinds(page, "chunk", "message") == ["chunk", "chunk", "message"]
    chunks = page.eval_on_selector_all(
        '#timeline li.event[data-kind="chunk"] .text',
        "texts => texts.map(text => text.textContent)",
    )
    assert chunks == ["Hel", "lo\n"]
    message = timeline.locator('li.event[data-kind="message"]')
    expect(message.locator(".label")).to_have_text("message complete: 5 bytes")
    expect(message.locator(".from")).to_have_text("from chunks #1 + #2")
    expect(message.locator(".text")).to_have_text("Hello")
    assert playground.errors == []


def test_twoMessagesOneChunk(openPlayground: OpenPlayground) -> None:
    """
    With line framing, two lines in one C{send} show as one chunk row then
    two message rows, each from that chunk.
    """
    playground = openPlayground("--framing", "line", "--keep-open")
    page = playground.page
    with connect(playground.server.port) as sock:
        sock.sendall(b"one\ntwo\n")
        sock.shutdown(socket.SHUT_WR)
        assert readToEOF(sock) == b"Message received: one\nMessage received: two\n"
    timeline = page.locator("#timeline")
    expect(timeline.locator('li.event[data-kind="message"] .text')).to_have_text(
        ["one", "two"], timeout=SHOWN
    )
    assert timelineKinds(page, "chunk", "message") == ["chunk", "message", "message"]
    expect(timeline.locator('li.event[data-kind="message"] .from')).to_have_text(
        ["from chunk #1", "from chunk #1"]
    )
    assert playground.errors == []


def test_responsiveUnderBench(openPlayground: OpenPlayground) -> None:
    """
    While the bench loads the same server for 5 s, the page answers an
    evaluation within a second each time, its message counter keeps
    moving, and its stream is either live or sampled (never reconnecting);
    after the run, the send panel still answers, and nothing was logged as
    an error.
    """
    playground = openPlayground()
    page = playground.page
    bench = subprocess.Popen(
        [sys.executable, "-m", "sockplay.bench", "--port", str(playground.server.port),
         "--duration", str(BENCH_SECONDS), "--connections", "8", "--quiet"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    counts: list[int] = []
    statuses: set[str] = set()
    slowest = 0.0
    try:
        while bench.poll() is None:
            started = time.monotonic()
            count, status = page.evaluate(
                f"""() => [{MESSAGES_SHOWN},
                           document.getElementById("stream-status").textContent]"""
            )
            slowest = max(slowest, time.monotonic() - started)
            counts.append(count)
            statuses.add(status)
            if bench.poll() is not None:
                break
            # The next sample once the counter moved (it moves 5 times a second).
            try:
                page.wait_for_function(
                    f"previous => {MESSAGES_SHOWN} !== previous",
                    arg=count,
                    timeout=SHOWN * 2,
                )
            except PlaywrightTimeout:
                if bench.poll() is None:
                    raise

        output, _ = bench.communicate(timeout=DEADLINE)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.communicate(timeout=DEADLINE)
    assert bench.returncode == 0, output
    assert slowest < RESPONSIVE, f"a page evaluation took {slowest:.3f} s"
    assert len(set(counts)) >= 3, counts
    assert counts == sorted(counts)
    assert all(status == "live" or status.startswith("sampled: ") for status in statuses), statuses
    send(page, "after the bench")
    expect(page.locator("#send-result")).to_have_text(
        "Response from the server: Message received: after the bench", timeout=SHOWN * 3
    )
    # Under load, a connection the page follows can be pruned before the
    # page asks for its events: the 404 the contract gives it is expected,
    # and Chromium logs every 404 as an error. Nothing else may be.
    unexpected = [error for error in playground.errors if not _PRUNED.search(error)]
    assert unexpected == []


def test_tutorialConversationScreenshot(openPlayground: OpenPlayground, tmp_path: Path) -> None:
    """
    A tutorial conversation (the client, then the send panel), its
    timeline selected, makes a 1280x800 screenshot: saved to
    C{$SOCKPLAY_SCREENSHOT} when that is set (docs/playground.png).
    """
    playground = openPlayground()
    page = playground.page
    assert tutorialClient(playground.server.port) == HELLO_PRINTED + "\n"
    expect(page.locator("#count-messages")).to_have_text("1", timeout=SHOWN)
    page.click("#send-button")
    expect(page.locator("#send-result")).to_have_text(HELLO_PRINTED, timeout=SHOWN * 3)
    expect(page.locator(CLIENT_RESPONSE)).to_have_count(1, timeout=SHOWN)
    expect(page.locator(SERVER_CLOSED)).to_have_count(1, timeout=SHOWN)
    expect(page.locator("#count-messages")).to_have_text("2", timeout=SHOWN)
    path = Path(os.environ.get("SOCKPLAY_SCREENSHOT") or tmp_path / "playground.png")
    page.screenshot(path=str(path))
    assert path.read_bytes().startswith(b"\x89PNG")
    assert playground.errors == []


# The page script of a browser's own WebSocket: open one to a URL, send one
# message (a text, or the bytes of a list), and resolve with the reply (a
# text, or its bytes as a list) or, if the server closes first, the close
# code; bounded.
_BROWSER_WEBSOCKET = """
([url, message]) => new Promise((resolve, reject) => {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const timer = setTimeout(() => reject(new Error("no reply within 5 s")), 5000);
  ws.onopen = () => ws.send(typeof message === "string" ? message : new Uint8Array(message));
  ws.onmessage = (event) => {
    clearTimeout(timer);
    resolve(typeof event.data === "string" ? event.data : Array.from(new Uint8Array(event.data)));
    ws.close();
  };
  ws.onclose = (event) => { clearTimeout(timer); resolve({ closed: event.code }); };
})
"""


def test_browserWebSocketGetsTheReply(openPlayground: OpenPlayground) -> None:
    """
    A page's own C{new WebSocket('ws://127.0.0.1:PORT/')} gets the reply to
    a text message as text and to a binary one as binary, from a page of
    another origin (any Origin may connect); a message over
    C{--max-message} is closed with code 1009, and the next is answered.

    The page is the server's C{/healthz} on its metrics site: another origin
    (port), and a loopback one, as Chromium requires of a page that reaches
    a loopback server (its local network access checks); the playground's
    own page may connect only to itself (its CSP).
    """
    playground = openPlayground(
        "--websocket", EPHEMERAL, "--max-message", "100", "--metrics", EPHEMERAL
    )
    port = webSocketPorts(playground.server)["tcp"]
    metrics = next(
        match.group(1)
        for line in playground.server.output
        if (match := re.search(r"Serving metrics on tcp:127\.0\.0\.1:(\d+) ", line))
    )
    url = f"ws://127.0.0.1:{port}/"
    page = playground.page.context.new_page()
    page.goto(f"http://127.0.0.1:{metrics}/healthz")
    assert page.evaluate(_BROWSER_WEBSOCKET, [url, HELLO.decode()]) == HELLO_PRINTED.removeprefix(
        "Response from the server: "
    )
    assert page.evaluate(_BROWSER_WEBSOCKET, [url, [255, 0]]) == [*b"Message received: ", 255, 0]
    assert page.evaluate(_BROWSER_WEBSOCKET, [url, "x" * 101]) == {"closed": 1009}
    assert page.evaluate(_BROWSER_WEBSOCKET, [url + "again", "ok"]) == "Message received: ok"
    assert playground.errors == []


def test_sendPanelToAWebSocketListener(openPlayground: OpenPlayground) -> None:
    """
    The send panel lists the server's WebSocket listeners by their URL next
    to its TCP ones; chosen, it takes no framing and its message gets the
    tutorial's reply line over WebSocket, one-shot and keep-open.
    """
    playground = openPlayground("--websocket", EPHEMERAL)
    port = webSocketPorts(playground.server)["tcp"]
    page = playground.page
    url = f"ws://127.0.0.1:{port}/"
    expect(page.locator(f'#send-listener option:text-is("{url}")')).to_have_count(1, timeout=SHOWN)
    expect(page.locator("#send-listener option")).to_have_count(2)
    page.select_option("#send-listener", label=url)
    expect(page.locator("#send-framing")).to_be_disabled()
    page.click("#send-button")
    expect(page.locator("#send-result")).to_have_text(HELLO_PRINTED, timeout=SHOWN * 3)
    expect(page.locator("#send-error")).to_have_text("")
    page.select_option("#send-mode", "keep-open")
    for _ in range(2):
        page.click("#send-button")
        expect(page.locator("#send-button")).to_be_enabled(timeout=SHOWN * 3)
        expect(page.locator("#send-result")).to_have_text(HELLO_PRINTED, timeout=SHOWN * 3)
    expect(page.locator("#send-note")).to_contain_text("same connection", timeout=SHOWN)
    playground.server.waitForLine(
        lambda line: f"on tcp:127.0.0.1:{port}, ok, 1 message" in line, "the one-shot WebSocket"
    )
    assert playground.errors == []


# Chromium's console error for a PUT /faults the server refused (a 400).
_REFUSED_FAULTS = re.compile(r"status of 400 .*\(http://127\.0\.0\.1:\d+/faults\)$")


def faultsInForce(webPort: int) -> dict[str, float]:
    """
    C{GET /faults} on the playground's site, as a client of its own.
    """
    import http.client
    import json

    connection = http.client.HTTPConnection("127.0.0.1", webPort, timeout=5)
    try:
        connection.request("GET", "/faults")
        response = connection.getresponse()
        assert response.status == 200
        faults: dict[str, float] = json.loads(response.read())
        return faults
    finally:
        connection.close()


def putFaults(webPort: int, body: bytes) -> None:
    """
    C{PUT /faults} on the playground's site, as another client would.
    """
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", webPort, timeout=5)
    try:
        connection.request("PUT", "/faults", body=body)
        assert connection.getresponse().status == 200
    finally:
        connection.close()


def test_faultsPanel(openPlayground: OpenPlayground) -> None:
    """
    The faults panel shows the faults in force and changes them: a delay
    applied on the page is in force (the tutorial client's reply takes at
    least that long); a value out of range is refused with the server's
    reason and changes nothing; a change made by another client shows on
    the page; "No faults" clears them all.
    """
    playground = openPlayground("--delay", "0.05")
    page = playground.page
    expect(page.locator("#faults-panel")).to_be_visible(timeout=SHOWN)
    expect(page.locator("#fault-delay")).to_have_value("0.05", timeout=SHOWN)
    page.fill("#fault-delay", "0.3")
    page.click("#faults-apply")
    expect(page.locator("#faults-status")).to_contain_text("Applied at", timeout=SHOWN)
    assert faultsInForce(playground.webPort)["delay"] == 0.3
    started = time.monotonic()
    assert tutorialClient(playground.server.port) == HELLO_PRINTED + "\n"
    assert time.monotonic() - started >= 0.3

    page.fill("#fault-dropRate", "2")
    page.click("#faults-apply")
    expect(page.locator("#faults-error")).to_have_text(
        "dropRate must be a probability from 0 to 1", timeout=SHOWN
    )
    assert faultsInForce(playground.webPort)["dropRate"] == 0

    page.fill("#fault-dropRate", "0")
    page.click("#faults-apply")
    expect(page.locator("#faults-error")).to_have_text("", timeout=SHOWN)
    putFaults(playground.webPort, b'{"throttle": 5000}')
    # The page reads the faults in force every 2 s.
    expect(page.locator("#fault-throttle")).to_have_value("5000", timeout=SHOWN * 2)
    expect(page.locator("#faults-status")).to_contain_text("Changed on the server", timeout=SHOWN)

    page.click("#faults-clear")
    expect(page.locator("#fault-delay")).to_have_value("0", timeout=SHOWN)
    expect(page.locator("#fault-throttle")).to_have_value("0")
    assert not any(faultsInForce(playground.webPort).values())
    assert [error for error in playground.errors if not _REFUSED_FAULTS.search(error)] == []
