"""
The console and shell examples of README.md and docs/*.md, found, run and
compared with what the docs show.

Every fenced block whose info string is C{console} or C{sh} is an example.
An HTML comment on the line right before the block (invisible on GitHub)
says how to run it; without one, the block runs as it is:

    <!-- example: not run: needs systemd as PID 1 -->
    <!-- example: server="twistd -n sockplay --framing line" -->
    <!-- example: before="python -m sockplay.certs certs" server="..." cwd=/home/me -->
    <!-- example: output=sample -->

C{server=} starts a server before the block and C{before=} runs a command
that must succeed, in the order written; C{cwd=} is the path the docs show
for the directory the example runs in; C{output=sample} says the output
shown is one run of a random process (see L{compareSample}).

In a C{console} block, C{$ command} lines are followed by their output. In
an C{sh} block each line is a command that must exit 0. In both, a command
that starts a server (C{twistd ... sockplay}, C{python -m sockplay.server},
C{haproxy}, C{systemd-socket-activate}, or any command ending in C{&}) is
started in the background and awaited; a blank line in an C{sh} block stops
the servers started so far (SIGTERM; a sockplay server must exit 0).

Examples run as root, on the machine's own files: one that would change
the system (an install, a copy into C{/etc}) must be marked as not run.
Each example runs in a fresh temporary directory holding a copy of
C{deploy/} and, as C{.venv}, a link to the test's own virtual environment,
in network, PID and mount namespaces of its own (L{support.docrun}), with
that environment's C{python} and C{twistd} first on C{PATH}.

C{python tests/support/docs.py --update [DOC[:LINE]...]} writes the real
output into the console blocks that disagree, for review (L{update}).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Example",
    "MarkupError",
    "Outcome",
    "compare",
    "compareSample",
    "findExamples",
    "lintMarkup",
    "normalise",
    "realBody",
    "runExample",
    "stepsOf",
]

REPOSITORY = Path(__file__).resolve().parents[2]
DOCRUN = Path(__file__).resolve().parent / "docrun.py"

# The example kinds: a console block shows output, an sh block does not.
KINDS = ("console", "sh")

# Repository folders copied into an example's directory.
COPIED = ("deploy",)

# Seconds one whole example may take (a stuck one fails the test, and every
# process it started dies with its namespace).
EXAMPLE_BOUND = 180.0

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)")
_MARKUP = re.compile(r"^\s*<!--\s*example:\s*(?P<body>.*?)\s*-->\s*$")
_NOT_RUN = re.compile(r"^not run:\s*(?P<reason>.*)$")
_COMMENT = re.compile(r"\s+#.*$")
_SERVER = re.compile(
    r"^(?:\S*/)?(?:twistd\s.*\bsockplay\b|haproxy\s|systemd-socket-activate\s"
    r"|python3?\s+-m\s+sockplay\.server\b)"
)


class MarkupError(Exception):
    """
    An example's markup cannot be understood.
    """


@dataclass
class Example:
    """
    One fenced C{console} or C{sh} block.

    @ivar path: the doc, relative to the repository.
    @ivar line: the line of its opening fence (1-based).
    @ivar kind: C{console} or C{sh}.
    @ivar body: its lines, without the fences and the block's indentation.
    @ivar markup: the text of its C{<!-- example: ... -->} comment, or C{None}.
    """

    path: str
    line: int
    kind: str
    body: list[str]
    markup: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def notRun(self) -> str | None:
        """
        Why the example is not run, or C{None} if it is.

        @raise MarkupError: the markup says "not run" without a reason.
        """
        match = _NOT_RUN.match(self.markup or "")
        if match is None:
            return None
        if not match.group("reason"):
            raise MarkupError(f"{self.where}: 'not run:' needs a reason")
        return match.group("reason")

    def options(self) -> list[tuple[str, str]]:
        """
        The markup's C{KEY=VALUE} pairs, in order.

        @raise MarkupError: a pair is malformed or its key unknown.
        """
        pairs = []
        for token in shlex.split(self.markup or ""):
            key, equals, value = token.partition("=")
            if not equals or key not in ("server", "before", "cwd", "output"):
                raise MarkupError(
                    f"{self.where}: unknown example markup {token!r} (expected "
                    "'not run: REASON', server=, before=, cwd= or output=sample)"
                )
            if key == "output" and value != "sample":
                raise MarkupError(f"{self.where}: output= takes only 'sample'")
            pairs.append((key, value))
        return pairs


def findExamples(path: Path, root: Path = REPOSITORY) -> list[Example]:
    """
    Every C{console} and C{sh} block of a Markdown file, with its markup.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    examples = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, indent = opening.group("fence"), len(opening.group("indent"))
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = index + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        if opening.group("info") in KINDS:
            before = _MARKUP.match(lines[index - 1]) if index else None
            examples.append(Example(
                path=str(path.relative_to(root)),
                line=index + 1,
                kind=opening.group("info"),
                body=[line[indent:] if not indent or line[:indent].isspace()
                      else line.lstrip() for line in lines[index + 1:end]],
                markup=before.group("body") if before else None,
            ))
        index = end + 1
    return examples


# Info strings of shell blocks that would escape the examples test.
_OTHER_SHELLS = ("bash", "shell", "shell-session", "zsh", "console-session", "sh-session")


def lintMarkup(path: Path, root: Path = REPOSITORY) -> list[str]:
    """
    What in a doc's markup would let an example escape the test: an
    C{example:} comment that is not right before a C{console} or C{sh}
    block (a typo, or a block moved away from it), and a shell block under
    another info string (C{bash}, C{shell}...).
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    name = path.relative_to(root)
    problems = []
    for index, line in enumerate(lines):
        if re.match(r"\s*<!--\s*example", line):
            following = _FENCE.match(lines[index + 1]) if index + 1 < len(lines) else None
            if not _MARKUP.match(line) or not following or following.group("info") not in KINDS:
                problems.append(f"{name}:{index + 1}: example markup not right before "
                                "a console or sh block")
        fence = _FENCE.match(line)
        if fence and fence.group("info") in _OTHER_SHELLS:
            problems.append(f"{name}:{index + 1}: a '{fence.group('info')}' block: "
                            "use console (with output) or sh (without)")
    return problems


def isServer(command: str) -> bool:
    """
    Whether C{command} starts something that runs until stopped: a
    sockplay server, HAProxy, systemd-socket-activate, or anything sent to
    the background with C{&}.
    """
    bare = _COMMENT.sub("", command).strip()
    if bare.endswith("&") and not bare.endswith("&&"):
        return True
    return bool(_SERVER.match(bare)) and not re.search(r"\s--(help|version)\b", bare)


def _background(command: str) -> str:
    """
    C{command} without its comment and its trailing C{&}.
    """
    return _COMMENT.sub("", command).strip().removesuffix("&").strip()


@dataclass
class Expected:
    """
    What a console block shows for one command.

    @ivar step: the index of the command's step.
    @ivar line: the command's line in the doc.
    @ivar command: the command as shown.
    @ivar output: the lines shown after it.
    """

    step: int
    line: int
    command: str
    output: list[str] = field(default_factory=list)


def stepsOf(example: Example) -> tuple[list[dict[str, Any]], list[Expected]]:
    """
    The steps that run C{example} (for L{support.docrun}), and the output
    it shows for each console command.
    """
    steps: list[dict[str, Any]] = []
    for key, value in example.options():
        if key == "server":
            steps.append({"server": value})
        elif key == "before":
            steps.append({"run": value, "mustSucceed": True})
    expected: list[Expected] = []
    pending = ""
    for offset, line in enumerate(example.body, start=example.line + 1):
        if example.kind == "console":
            if line.startswith("$ "):
                command = line[2:]
                if isServer(command):
                    steps.append({"server": _background(command)})
                    expected.append(Expected(-1, offset, command))
                else:
                    steps.append({"run": command})
                    expected.append(Expected(len(steps) - 1, offset, command))
            elif not expected:
                raise MarkupError(f"{example.where}: output before the first '$ ' command")
            else:
                expected[-1].output.append(line)
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        command, pending = (pending + line).strip(), ""
        if not command:
            steps.append({"stop": True})
        elif command.startswith("#"):
            continue
        elif isServer(command):
            steps.append({"server": _background(command)})
        else:
            steps.append({"run": command, "mustSucceed": True})
    for shown in expected:
        if shown.step < 0 and shown.output:
            raise MarkupError(
                f"{example.path}:{shown.line}: a server command shows no output "
                "(it runs in another terminal)"
            )
    return steps, expected


# What must vary from run to run, and what it becomes on both sides.
_TIMES = re.compile(r"\b\d+\.\d+(?=(?:/\d+\.\d+)*\s?m?s\b)")
_EPHEMERAL_PORT = re.compile(r"(?<=:)(?:3[2-9]\d{3}|[45]\d{4}|60\d{3})\b")
_DATE = re.compile(r"\b\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:[+-]\d{4}|Z)?)?")
_PID = re.compile(r"(?<=\bpid )\d+|(?<=\bpid=)\d+|(?<=\[)\d+(?=\])")


def normalise(text: str) -> str:
    """
    A line of output with what must vary between runs replaced by a
    placeholder (times with a decimal point, in s or ms; ephemeral ports;
    dates; pids), and without trailing blanks, which a terminal does not
    show.
    """
    text = _TIMES.sub("<time>", text.rstrip())
    text = _EPHEMERAL_PORT.sub("<port>", text)
    text = _DATE.sub("<date>", text)
    return _PID.sub("<pid>", text)


def _lines(output: str) -> list[str]:
    return output.splitlines()


def realBody(expected: list[Expected], results: dict[int, dict[str, Any]],
             shownCwd: str, realCwd: str) -> list[str]:
    """
    A console block as it really ran: each command as shown, followed by
    its real output (the temporary directory shown as the doc shows it).
    """
    body = []
    for shown in expected:
        body.append(f"$ {shown.command}")
        if shown.step >= 0:
            body.extend(_lines(results[shown.step]["output"].replace(realCwd, shownCwd)))
    return body


def compare(example: Example, real: list[str]) -> str | None:
    """
    Compare a console block with the real run of its commands (L{realBody}).

    @return: C{None} if they agree, else a unified diff of the two,
        normalised, and the real block, ready to paste into the doc.
    """
    shown = example.body
    if ("output", "sample") in example.options():
        wanted, got = _outputs(shown), _outputs(real)
        agree = len(wanted) == len(got) and all(
            compareSample([normalise(line) for line in one], [normalise(line) for line in other])
            for one, other in zip(wanted, got, strict=True)
        )
    else:
        agree = [normalise(line) for line in shown] == [normalise(line) for line in real]
    if agree:
        return None
    diff = difflib.unified_diff(
        [normalise(line) for line in shown], [normalise(line) for line in real],
        f"{example.where} (shown, normalised)", "real run (normalised)", lineterm="", n=20,
    )
    return "\n".join([*diff, "", "The real block, to paste into the doc:", "```console",
                      *real, "```"])


def _outputs(body: list[str]) -> list[list[str]]:
    """
    The output of each command of a console block.
    """
    outputs: list[list[str]] = []
    for line in body:
        if line.startswith("$ "):
            outputs.append([])
        else:
            outputs[-1].append(line)
    return outputs


_NUMBER = re.compile(r"\d+")


def compareSample(shown: list[str], real: list[str]) -> bool:
    """
    Whether C{real} is another run of a random process of which C{shown}
    is one run: its last line is the one shown, and each other line is, up
    to its numbers, one of the lines shown.
    """
    if not real or not shown:
        return real == shown
    if real[-1] != shown[-1]:
        return False
    shapes = {_NUMBER.sub("N", line) for line in shown}
    return all(_NUMBER.sub("N", line) in shapes for line in real)


# The test process's environment, copied once at import: the examples run
# in threads, and copying os.environ in one races with pytest, which sets
# and deletes PYTEST_CURRENT_TEST in the main thread ("dictionary changed
# size during iteration", or a KeyError).
_ENVIRONMENT = {
    name: value for name, value in os.environ.items() if not name.startswith("PYTEST_")
}


def environment() -> dict[str, str]:
    """
    The environment examples run in: this Python's C{bin} folder first on
    C{PATH} (its C{python}, C{twistd}), unbuffered Python output (so that
    stdout and stderr interleave as on a terminal), a fixed width.
    """
    env = dict(_ENVIRONMENT)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env.update(PYTHONUNBUFFERED="1", COLUMNS="80", TERM="dumb")
    env.pop("PYTHONSTARTUP", None)
    return env


@dataclass
class Outcome:
    """
    How an example ran.

    @ivar problems: what disagrees with the doc, each ready to print (none
        if the example agrees with the program).
    @ivar real: for a console block that ran, the block as it really ran
        (L{realBody}); else C{None}.
    """

    problems: list[str]
    real: list[str] | None = None


def runExample(example: Example) -> Outcome:
    """
    Run C{example} in a namespace of its own and check it.
    """
    steps, expected = stepsOf(example)
    shownCwd = dict(example.options()).get("cwd", "<tmp>")
    with tempfile.TemporaryDirectory(prefix="sockplay-docs-") as scratch:
        cwd = os.path.realpath(scratch)
        for name in COPIED:
            shutil.copytree(REPOSITORY / name, Path(cwd) / name)
        if sys.prefix != sys.base_prefix:
            # The README's .venv/bin/... commands use the test's own venv.
            (Path(cwd) / ".venv").symlink_to(sys.prefix)
        command = ["unshare", "--net", "--pid", "--mount", "--fork", "--kill-child"]
        if os.geteuid() != 0:
            command.append("--map-root-user")
        try:
            ran = subprocess.run(
                [*command, sys.executable, str(DOCRUN)],
                input=json.dumps({"cwd": cwd, "env": environment(), "steps": steps}),
                capture_output=True, text=True, timeout=EXAMPLE_BOUND, check=False,
            )
        except subprocess.TimeoutExpired:
            return Outcome([f"{example.where}: still running after {EXAMPLE_BOUND:g} s (killed)"])
        try:
            report = json.loads(ran.stdout)
        except ValueError:
            return Outcome([
                f"{example.where}: could not run the example in a network namespace of its "
                f"own (unshare --net --pid --mount, exit {ran.returncode}): the docs examples need "
                "root, as in CI, or unprivileged user namespaces.\n"
                f"{ran.stderr.strip()}"
            ])
        if "error" in report:
            return Outcome([f"{example.where}: {report['error']}"])
        return _check(example, steps, expected, report["results"], shownCwd, cwd)


def _check(example: Example, steps: list[dict[str, Any]], expected: list[Expected],
           results: list[dict[str, Any]], shownCwd: str, cwd: str) -> Outcome:
    """
    Check what L{support.docrun} reports: servers ready and stopped
    cleanly, commands ended (successfully where they must), and a console
    block's output.
    """
    problems = []
    notReady = {result["server"] for result in results if "notReady" in result}
    for result in results:
        output = result["output"].replace(cwd, shownCwd).rstrip()
        if "notReady" in result:
            problems.append(f"{example.where}: server `{result['server']}` "
                            f"{result['notReady']}:\n{output}")
        elif "server" in result and result["server"] not in notReady:
            # A sockplay server exits 0 on SIGTERM; another program (HAProxy)
            # may die of the signal.
            allowed = (0,) if "sockplay" in result["server"] else (0, -15, 143)
            if result["killed"] or result["status"] not in allowed:
                problems.append(
                    f"{example.where}: server `{result['server']}` did not stop cleanly on "
                    f"SIGTERM (exit status {result['status']}"
                    f"{', killed' if result['killed'] else ''}):\n{output}"
                )
    # Every run step that was reached has one result, in order.
    runSteps = [index for index, step in enumerate(steps) if "run" in step]
    runResults = [result for result in results if "run" in result]
    byStep = dict(zip(runSteps, runResults, strict=False))
    for index in runSteps:
        step, result = steps[index], byStep.get(index)
        if result is None:
            problems.append(f"{example.where}: the example ended before `{step['run']}`")
            break
        if result["timedOut"]:
            problems.append(f"{example.where}: `{step['run']}` still running after its bound")
        elif step.get("mustSucceed") and result["status"] != 0:
            output = result["output"].replace(cwd, shownCwd).rstrip()
            problems.append(
                f"{example.where}: `{step['run']}` exited {result['status']}:\n{output}"
            )
    if example.kind != "console" or problems:
        return Outcome(problems)
    real = realBody(expected, byStep, shownCwd, cwd)
    diff = compare(example, real)
    return Outcome([diff] if diff else [], real)


def update(examples: list[Example]) -> None:
    """
    Run C{examples} and write the real output of each console block that
    disagrees into its doc, in place. Review the change (C{git diff}):
    the real output may be the bug.
    """
    for example in sorted(examples, key=lambda example: -example.line):
        if example.kind != "console" or example.notRun() is not None:
            continue
        outcome = runExample(example)
        if outcome.real is None or not outcome.problems:
            for problem in outcome.problems:
                print(problem, file=sys.stderr)
            continue
        path = REPOSITORY / example.path
        lines = path.read_text(encoding="utf-8").split("\n")
        indent = lines[example.line - 1][: len(lines[example.line - 1])
                                          - len(lines[example.line - 1].lstrip())]
        end = example.line + len(example.body)
        lines[example.line:end] = [indent + line if line else line for line in outcome.real]
        path.write_text("\n".join(lines), encoding="utf-8")
        print(f"updated {example.where}")


def main(arguments: list[str]) -> None:
    """
    C{python tests/support/docs.py --update [DOC[:LINE]...]}: write the
    real output into the console blocks that disagree (all of them, those
    of one doc, or one block).
    """
    if not arguments or arguments[0] != "--update":
        sys.exit("usage: python tests/support/docs.py --update [DOC[:LINE]...]")
    wanted = arguments[1:]
    docs = [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").glob("*.md"))]
    for doc in docs:
        examples = [example for example in findExamples(doc)
                    if not wanted or example.path in wanted or example.where in wanted]
        update(examples)


if __name__ == "__main__":
    main(sys.argv[1:])
