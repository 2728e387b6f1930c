"""
Every console and shell example in README.md and docs/*.md runs, and shows
what the program really prints.

Each example is run against real servers, in a network namespace of its
own (so the docs' literal ports work), and its output is compared with the
doc's, normalising only what must vary (times, ephemeral ports, dates,
pids, the temporary directory). The markup that says how to run an example
is described in L{support.docs} and in docs/architecture.md. After a change
of output, C{python tests/support/docs.py --update DOC[:LINE]} writes the
real output into the doc, for review.

The tests after the examples hold the harness itself: the parser, the
markup, the normalisation, and that a wrong example fails.
"""

from __future__ import annotations

import ast
import re
import shlex
import socket
import textwrap
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from support.docs import (
    REPOSITORY,
    Example,
    MarkupError,
    Outcome,
    compareSample,
    findExamples,
    lintMarkup,
    normalise,
    runExample,
    stepsOf,
)
from support.servers import SERVER, ServerPool, connect, readToEOF

from sockplay.server import tap

DOCS = [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").glob("*.md"))]
EXAMPLES = [example for path in DOCS for example in findExamples(path)]
RUN = [example for example in EXAMPLES if example.notRun() is None]

# Examples run at once: each has a namespace of its own, and most of an
# example's time is spent waiting (for a server, a probe's interval, a
# bench's duration).
AT_ONCE = 4


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest) -> Iterator[dict[str, Future[Outcome]]]:
    """
    The outcome of each selected example, run AT_ONCE at a time as soon as
    the first of them is asked for.
    """
    selected = [
        item.callspec.params["example"] for item in request.session.items
        if isinstance(item, pytest.Function) and item.originalname == "test_example"
    ]
    with ThreadPoolExecutor(AT_ONCE) as pool:
        yield {
            example.where: pool.submit(runExample, example)
            for example in selected if example.notRun() is None
        }


@pytest.mark.parametrize("example", RUN, ids=[example.where for example in RUN])
def test_example(example: Example, outcomes: dict[str, Future[Outcome]]) -> None:
    """
    The example runs as the doc shows it: its commands succeed, its servers
    start and stop cleanly, and a console block's output is the real one.
    """
    problems = outcomes[example.where].result().problems
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def test_notRunSaysWhy() -> None:
    """
    An example that cannot run here (it installs, or needs systemd as PID 1
    or a Docker engine) is marked as not run with a reason a reader can
    check.
    """
    notRun = {example.where: example.notRun() for example in EXAMPLES if example not in RUN}
    assert all(reason and len(reason.split()) >= 3 for reason in notRun.values()), notRun


def test_examplesFound() -> None:
    """
    The docs hold examples of both kinds, in the README and in docs/: a
    parser that found none would make every other test here vacuous.
    """
    kinds = {example.kind for example in EXAMPLES}
    paths = {Path(example.path).parts[0] for example in EXAMPLES}
    assert kinds == {"console", "sh"}
    assert {"README.md", "docs"} <= paths


def test_noExampleEscapes() -> None:
    """
    No example markup is astray (not right before a console or sh block)
    and no shell block hides under another info string, so every example
    in the docs is run or marked as not run.
    """
    assert [problem for path in DOCS for problem in lintMarkup(path)] == []


def _doc(tmp_path: Path, text: str) -> list[Example]:
    path = tmp_path / "doc.md"
    path.write_text(textwrap.dedent(text))
    return findExamples(path, root=tmp_path)


def test_findsConsoleAndShBlocksWithMarkup(tmp_path: Path) -> None:
    """
    C{console} and C{sh} blocks are examples, indented ones (in a list)
    too, with the markup of the line right before them; other blocks are
    not examples.
    """
    examples = _doc(tmp_path, """\
        Text.

        <!-- example: server="twistd -n sockplay" -->
        ```console
        $ python -m sockplay.client
        Response from the server: Message received: Hello Server !
        ```

        ```python
        print("not an example")
        ```

        - a list item:

          ```sh
          echo one
          ```
        """)
    assert [(e.line, e.kind, e.body, e.markup) for e in examples] == [
        (4, "console", ["$ python -m sockplay.client",
                        "Response from the server: Message received: Hello Server !"],
         'server="twistd -n sockplay"'),
        (15, "sh", ["echo one"], None),
    ]


def test_outputKeepsItsIndentation(tmp_path: Path) -> None:
    """
    An unindented block's lines keep their own indentation (pretty-printed
    JSON, aligned tables), so that it is compared too; an indented block
    loses only the block's.
    """
    examples = _doc(tmp_path, """\
        ```console
        $ python -m json.tool x.json
        {
            "a": 1
        }
        ```

        - item:

          ```console
          $ cat x
            two spaces
          ```
        """)
    assert [e.body for e in examples] == [
        ["$ python -m json.tool x.json", "{", '    "a": 1', "}"],
        ["$ cat x", "  two spaces"],
    ]


def test_notRunNeedsAReason(tmp_path: Path) -> None:
    """
    C{not run:} gives the reason; without one, the markup is an error.
    """
    marked, bare = _doc(tmp_path, """\
        <!-- example: not run: needs systemd as PID 1 -->
        ```sh
        systemctl start sockplay.socket
        ```
        <!-- example: not run: -->
        ```sh
        systemctl start sockplay.socket
        ```
        """)
    assert marked.notRun() == "needs systemd as PID 1"
    with pytest.raises(MarkupError, match=re.escape("doc.md:6: 'not run:' needs a reason")):
        bare.notRun()


def test_unknownMarkupIsAnError(tmp_path: Path) -> None:
    """
    A misspelt key is an error, not silently ignored.
    """
    [example] = _doc(tmp_path, """\
        <!-- example: sever="twistd -n sockplay" -->
        ```sh
        echo one
        ```
        """)
    with pytest.raises(MarkupError, match="unknown example markup"):
        stepsOf(example)


def test_strayMarkupAndOtherShellsReported(tmp_path: Path) -> None:
    """
    Markup that is not right before an example, and a shell block under
    another info string, are reported.
    """
    path = tmp_path / "doc.md"
    path.write_text("<!-- example: not run: gone -->\n\n```sh\nls\n```\n\n```bash\nls\n```\n")
    assert lintMarkup(path, root=tmp_path) == [
        "doc.md:1: example markup not right before a console or sh block",
        "doc.md:7: a 'bash' block: use console (with output) or sh (without)",
    ]


def test_steps(tmp_path: Path) -> None:
    """
    Markup steps come first, in order; a server command (or one ending in
    C{&}) is started in the background; a blank line in an sh block stops
    the servers; comment lines are skipped; sh commands must succeed.
    """
    [example] = _doc(tmp_path, """\
        <!-- example: before="python -m sockplay.certs certs" server="haproxy -db -f x.cfg" -->
        ```sh
        twistd -n sockplay --framing line &    # comment
        python -m sockplay.client --framing line

        # a comment
        python -m sockplay.server --framing int32
        ```
        """)
    steps, expected = stepsOf(example)
    assert steps == [
        {"run": "python -m sockplay.certs certs", "mustSucceed": True},
        {"server": "haproxy -db -f x.cfg"},
        {"server": "twistd -n sockplay --framing line"},
        {"run": "python -m sockplay.client --framing line", "mustSucceed": True},
        {"stop": True},
        {"server": "python -m sockplay.server --framing int32"},
    ]
    assert expected == []


def test_consoleServerShowsNoOutput(tmp_path: Path) -> None:
    """
    A server command in a console block runs in "another terminal": output
    shown after it is an error in the doc.
    """
    [example] = _doc(tmp_path, """\
        ```console
        $ twistd -n sockplay
        Listening on ...
        ```
        """)
    with pytest.raises(MarkupError, match="a server command shows no output"):
        stepsOf(example)


def test_normalise() -> None:
    """
    Times with a decimal point, ephemeral ports, dates and pids become
    placeholders; fixed ports, counts and whole seconds stay as they are.
    """
    assert normalise(
        "seq=1 rtt=0.650 ms 0.397/0.490/0.650/0.087 ms waiting 0.064 s  "
    ) == "seq=1 rtt=<time> ms <time>/<time>/<time>/<time> ms waiting <time> s"
    assert normalise("127.0.0.1:12345 from 127.0.0.1:45678") == (
        "127.0.0.1:12345 from 127.0.0.1:<port>"
    )
    assert normalise("2026-11-29T14:23:01+0000 [sockplay#info] pid 4242") == (
        "<date> [sockplay#info] pid <pid>"
    )
    assert normalise("Error: idle timeout (1 s), 5 sent") == "Error: idle timeout (1 s), 5 sent"
    # In --info's JSON: the peer's port, the pid and the host name; not a
    # fixed port.
    assert normalise('"port": 45678, "port": 12350, "hostname": "vm-7", "pid": 31337,') == (
        '"port": <port>, "port": 12350, "hostname": "<hostname>", "pid": <pid>,'
    )
    assert normalise('"hostname":"vm-7","pid":31337}') == '"hostname":"<hostname>","pid":<pid>}'



def test_compareSample() -> None:
    """
    With C{output=sample}, another run of a random process agrees when
    its last line is the one shown and its other lines have the shapes
    shown; a different ending does not.
    """
    shown = ["Retrying (attempt 2 of 11) after x", "Response"]
    assert compareSample(shown, ["Response"])
    assert compareSample(shown, ["Retrying (attempt 2 of 11) after x",
                                 "Retrying (attempt 3 of 11) after x", "Response"])
    assert not compareSample(shown, ["Retrying (attempt 2 of 11) after y", "Response"])
    assert not compareSample(shown, ["Error: closed (after 11 attempts)"])


def test_wrongOutputFailsWithADiff(tmp_path: Path) -> None:
    """
    A console block whose output is not the real one fails, with a diff
    that names the doc and line and the real block to paste.
    """
    [example] = _doc(tmp_path, """\
        ```console
        $ echo one; echo two
        one
        three
        ```
        """)
    outcome = runExample(example)
    [problem] = outcome.problems
    assert "--- doc.md:1 (shown, normalised)" in problem
    assert "-three\n+two" in problem
    assert problem.endswith("```console\n$ echo one; echo two\none\ntwo\n```")
    assert outcome.real == ["$ echo one; echo two", "one", "two"]


def test_failingCommandFails(tmp_path: Path) -> None:
    """
    An sh command that exits non-zero fails the example, with its output.
    """
    [example] = _doc(tmp_path, "```sh\necho oops; exit 3\n```\n")
    assert runExample(example).problems == ["doc.md:1: `echo oops; exit 3` exited 3:\noops"]


def test_serverThatDoesNotStartFails(tmp_path: Path) -> None:
    """
    A server that exits before it is ready fails the example, with what it
    printed; the commands after it do not run.
    """
    [example] = _doc(tmp_path, """\
        ```sh
        python -m sockplay.server --framing nosuch
        echo never
        ```
        """)
    problems = runExample(example).problems
    assert problems[0].startswith(
        "doc.md:1: server `python -m sockplay.server --framing nosuch` exited with status 2 "
        "before it was ready:\nError: "
    )
    assert problems[1:] == ["doc.md:1: the example ended before `echo never`"]


def test_examplesHaveANetworkOfTheirOwn(tmp_path: Path) -> None:
    """
    Each example runs in a network namespace of its own: a port that is in
    use on the machine is free for the example, so the literal ports of
    the docs (12345, 9100...) never clash with anything.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        [example] = _doc(tmp_path, f"""\
            ```sh
            python -m sockplay.server --listen tcp:{port}:interface=127.0.0.1
            python -m sockplay.client --port {port}
            ```
            """)
        assert runExample(example).problems == []


# Item 18 of issue 9: docs that disagreed with the program.


def test_tourInteractiveServerHasNoIdleTimeout() -> None:
    """
    The tour's interactive line server (a person types into C{nc}) turns
    the idle timeout off, so a pause of more than 30 s does not cut the
    person off.
    """
    readme = (REPOSITORY / "docs" / "tour.md").read_text()
    [line] = [line for line in readme.splitlines() if "nc 127.0.0.1 12345, type lines" in line]
    arguments = shlex.split(line, comments=True)
    assert arguments[:3] == ["twistd", "-n", "sockplay"]
    options = tap.Options()
    options.parseOptions(arguments[3:])
    assert options["keep-open"] and options["framing"] == "line"
    assert options["idle-timeout"] == 0


def test_protocolKeepOpenHasAnIdleTimeout() -> None:
    """
    protocol.md's keep-open section says that keep-open connections have
    the idle timeout (30 s by default, C{--idle-timeout 0} turns it off),
    as the server does, and not that there is none.
    """
    protocol = (REPOSITORY / "docs" / "protocol.md").read_text()
    keepOpen = protocol.split("### `--keep-open`")[1].split("### ")[0]
    assert "no idle timeout" not in keepOpen
    assert f"({tap.DEFAULT_IDLE_TIMEOUT:g} s)" in keepOpen and "`--idle-timeout 0`" in keepOpen


def test_protocolTruncatedInt32IsReal(servers: ServerPool) -> None:
    """
    protocol.md's example of an int32 frame cut short by the half-close
    shows the bytes a real server sends.
    """
    protocol = (REPOSITORY / "docs" / "protocol.md").read_text()
    request, reply = re.search(
        r'^    (b"[^"]*") \+ half-close\n        →  (b"[^"]*")$', protocol, re.MULTILINE
    ).groups()
    server = servers.start(SERVER, "--framing", "int32")
    with connect(server.port) as sock:
        sock.sendall(ast.literal_eval(request))
        sock.shutdown(socket.SHUT_WR)
        assert readToEOF(sock) == ast.literal_eval(reply)


def test_failedCommandEndsTheExample(tmp_path: Path) -> None:
    """
    The first sh command that fails ends the example: what follows may
    rely on it (an install before a copy into the system), so it does not
    run.
    """
    [example] = _doc(tmp_path, "```sh\nfalse\ntouch ran\n```\n")
    assert runExample(example).problems == [
        "doc.md:1: `false` exited 1:\n",
        "doc.md:1: the example ended before `touch ran`",
    ]
