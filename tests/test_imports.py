"""
The direction of imports inside sockplay, walked with L{ast} so that an
import hidden inside a function counts as much as one at the top:

  - no cycles between sockplay's modules;
  - C{framing}, C{cli}, C{latency} and C{website} import nothing of
    sockplay's own,
    and C{tally} only C{latency};
  - C{server}, C{client} and C{bench} never import each other; the
    C{playground}, which drives the client against its own server, may
    import both, and only the server's assembly (C{tap}) imports it;
  - inside C{server}, only the command imports C{tap} (it assembles, it is
    not assembled), and the connection's own modules (protocol, factory,
    faults, lifecycle) never import tap, workers or metrics.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sockplay

PACKAGE = Path(sockplay.__file__).resolve().parent


def moduleName(path: Path) -> str:
    """
    The dotted name of the module at C{path} inside the package.
    """
    parts = ["sockplay", *path.relative_to(PACKAGE).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sockplayImports(path: Path) -> set[str]:
    """
    Every sockplay module that the module at C{path} imports, anywhere in
    its body (functions included); C{from a import b} counts as importing
    C{a.b} where that is a module, else C{a}.
    """
    modules = {moduleName(p) for p in PACKAGE.rglob("*.py")}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in modules
                else node.module
                for alias in node.names
            ]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] == "sockplay")
    return found


def importGraph() -> dict[str, set[str]]:
    """
    Each sockplay module and the sockplay modules it imports (a package's
    own C{__init__} is left out of its submodules' edges: importing
    C{sockplay.server.tap} runs C{sockplay.server} first, but that is
    Python's doing, not a dependency).
    """
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = moduleName(path)
        graph[name] = sockplayImports(path) - {name}
    return graph


def findCycle(graph: dict[str, set[str]]) -> list[str] | None:
    """
    A cycle in C{graph}, as the list of modules along it, or C{None}.
    """
    WHITE, GREY, BLACK = range(3)
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in colour:
                continue
            if colour[target] == GREY:
                return [*stack[stack.index(target) :], target]
            if colour[target] == WHITE:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        colour[node] = BLACK
        return None

    for node in sorted(graph):
        if colour[node] == WHITE:
            found = visit(node)
            if found:
                return found
    return None


def test_findCycleFindsOne() -> None:
    """
    The cycle finder finds a cycle, even through a third module, and none
    where there is none: the tests below would otherwise prove nothing.
    """
    assert findCycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert findCycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_importsInsideFunctionsCount(tmp_path: Path) -> None:
    """
    An import inside a function is found like one at the top of a module.
    """
    module = PACKAGE / "server" / "workers.py"
    assert "sockplay.server.lifecycle" in sockplayImports(module)
    hidden = tmp_path / "hidden.py"
    hidden.write_text("def f():\n    from sockplay.server import tap\n")
    assert sockplayImports(hidden) == {"sockplay.server.tap"}


def test_noCycles() -> None:
    """
    No sockplay module imports itself back through others.
    """
    assert findCycle(importGraph()) is None


@pytest.mark.parametrize(
    "shared",
    [
        "sockplay.framing",
        "sockplay.cli",
        "sockplay.latency",
        "sockplay.tlserrors",
        "sockplay.website",
        "sockplay.wsframes",
    ],
)
def test_sharedModulesImportNothingOfOurs(shared: str) -> None:
    """
    The shared modules stand alone, so that every package may use them.
    """
    assert importGraph()[shared] == set()


def test_tallyImportsOnlyTheLatencyHistogramAndStickiness() -> None:
    """
    The tally, shared by the client and the bench, imports neither of them:
    only the latency histogram's settings and the stickiness check.
    """
    assert importGraph()["sockplay.tally"] == {"sockplay.latency", "sockplay.stickiness"}
    assert importGraph()["sockplay.stickiness"] == set()


@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("sockplay.server", ("sockplay.client", "sockplay.bench")),
        ("sockplay.client", ("sockplay.server", "sockplay.bench", "sockplay.playground")),
        ("sockplay.bench", ("sockplay.server", "sockplay.client", "sockplay.playground")),
        ("sockplay.playground", ("sockplay.bench",)),
        ("sockplay.certs", ("sockplay.server", "sockplay.client", "sockplay.bench")),
    ],
)
def test_packagesDoNotImportEachOther(package: str, forbidden: tuple[str, ...]) -> None:
    """
    The server, the client and the load generator share only the framing
    and the command-line module: the bench stays an independent judge of
    the server, and the client works against any server.
    """
    wrong = {
        (module, target)
        for module, targets in importGraph().items()
        if module == package or module.startswith(package + ".")
        for target in targets
        if target.startswith(forbidden)
    }
    assert wrong == set()


def test_onlyTapImportsThePlayground() -> None:
    """
    The playground is assembled into the server by C{tap} alone, so that no
    part of the server depends on the client through it.
    """
    importers = {
        m
        for m, targets in importGraph().items()
        if not m.startswith("sockplay.playground")
        and any(t.startswith("sockplay.playground") for t in targets)
    }
    assert importers == {"sockplay.server.tap"}


def test_tapIsNotImported() -> None:
    """
    Inside the server, C{tap} assembles the parts and nothing imports it but
    the command that runs it (C{python -m sockplay.server}).
    """
    importers = {m for m, targets in importGraph().items() if "sockplay.server.tap" in targets}
    assert importers == {"sockplay.server.command"}


@pytest.mark.parametrize(
    "module",
    [
        "sockplay.server.protocol",
        "sockplay.server.faults",
        "sockplay.server.factory",
        "sockplay.server.lifecycle",
        "sockplay.server.settings",
        "sockplay.server.limits",
        "sockplay.server.proxy",
        "sockplay.server.proxyheader",
        "sockplay.server.sendqueue",
        "sockplay.server.trace",
        "sockplay.server.tracer",
        "sockplay.server.tracefeed",
        "sockplay.server.traced",
    ],
)
def test_connectionModulesDoNotImportAssembly(module: str) -> None:
    """
    A connection's own modules never import what assembles or observes
    them: tap, the workers or metrics subscribe to the factory, not the other
    way round.
    """
    assembly = {
        "sockplay.server.tap",
        "sockplay.server.workers",
        "sockplay.server.worker",
        "sockplay.server.metrics",
        "sockplay.website",
        "sockplay.playground",
    }
    assert importGraph()[module] & assembly == set()


def _baseDistributions() -> set[str]:
    """
    The distributions that C{pip install sockplay} brings in: its
    requirements without extras, and theirs, with the extras they name.
    """
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name as normal

    wanted: list[tuple[str, frozenset[str]]] = [("sockplay", frozenset())]
    seen: set[str] = set()
    while wanted:
        name, extras = wanted.pop()
        key = normal(name)
        if key in seen and not extras:
            continue
        seen.add(key)
        try:
            lines = requires(name) or []
        except PackageNotFoundError:
            continue
        for line in lines:
            requirement = Requirement(line)
            marker = requirement.marker
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if marker is not None and not any(marker.evaluate(e) for e in environments):
                continue
            wanted.append((requirement.name, frozenset(requirement.extras)))
    return seen


def test_baseInstallHasEveryImport() -> None:
    """
    Every third-party module that sockplay imports, TLS, the load
    generator's histogram and the certificate helper included, comes with
    the base install: no feature needs an extra.
    """
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    owners = packages_distributions()
    base = _baseDistributions()
    missing = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                distributions = owners.get(top)
                if distributions is None:  # the standard library, or sockplay
                    continue
                if not {canonicalize_name(d) for d in distributions} & base:
                    missing.add((moduleName(path), top))
    assert missing == set()
