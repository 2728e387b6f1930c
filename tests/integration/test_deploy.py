"""
Tests for the deployment files in C{deploy/} and the C{Dockerfile}.

HAProxy and systemd socket activation run for real, on loopback, with the
installed C{twistd} plugin. The Dockerfile and the Kubernetes manifests
cannot run here (no container engine, no cluster): their tests read them and
check what the server's behaviour requires of them.

HAProxy comes from the Debian package C{haproxy}, C{systemd-socket-activate}
and C{systemd-analyze} from C{systemd}. Without them, these tests are skipped
on a developer's machine and fail in CI (where C{CI} is set).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.servers import DEADLINE, LOOPBACK, SOCKET_TIMEOUT, TWISTD, ServerProcess

from sockplay.server.tap import DEFAULT_DRAIN_TIMEOUT

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
HAPROXY_CONFIG = DEPLOY / "haproxy" / "haproxy.cfg"
HAPROXY_TLS_CONFIG = DEPLOY / "haproxy" / "tls.cfg"

# Clients of the HAProxy test connect from here: HAProxy reaches the servers
# from 127.0.0.1, so a server that shows this address got it from the PROXY
# header, not from its own socket.
CLIENT_ADDRESS = "127.0.0.2"

# Tries at a port picked by binding and closing a socket, in case another
# process takes it in between.
PORT_TRIES = 5

# Starts a child process that the test's teardown stops.
Start = Callable[[list[str]], ServerProcess]


def requireTool(name: str, package: str) -> str:
    """
    The path of the program C{name}. If it is missing, skip the test, or
    fail it in CI, naming the Debian C{package} that provides it.
    """
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: apt-get install -y {package}")
        pytest.skip(f"{name} is not installed (Debian package {package})")
    return path


def freePort() -> int:
    """
    A loopback TCP port that was free a moment ago, for programs that
    cannot listen on port 0 and tell which port they got.
    """
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Start]:
    """
    Start child processes for one test (their output read as L{ServerProcess}
    reads a server's); every one is stopped after the test.
    """
    started: list[ServerProcess] = []

    def start(command: list[str]) -> ServerProcess:
        process = ServerProcess(command, tmp_path)
        started.append(process)
        return process

    try:
        yield start
    finally:
        while started:
            started.pop().stop()


def haproxyTestConfig(
    ports: dict[str, int], serverPorts: list[int], infoPorts: list[int], statsSocket: Path
) -> str:
    """
    C{deploy/haproxy/haproxy.cfg} with test ports, a test stats socket and
    fast health checks. Each change must apply exactly once, so that the
    test keeps running the shipped file rather than a copy that drifts.

    @param ports: the frontends' ports, by name: C{echo}, C{info}.
    """
    first, second = serverPorts
    infoFirst, infoSecond = infoPorts
    return _replaced(HAPROXY_CONFIG, [
        ("bind 127.0.0.1:12345", f"bind {LOOPBACK}:{ports['echo']}"),
        ("bind 127.0.0.1:12350", f"bind {LOOPBACK}:{ports['info']}"),
        ("server sockplay1 127.0.0.1:12346", f"server sockplay1 {LOOPBACK}:{first}"),
        ("server sockplay2 127.0.0.1:12347", f"server sockplay2 {LOOPBACK}:{second}"),
        ("server info1 127.0.0.1:12351", f"server info1 {LOOPBACK}:{infoFirst}"),
        ("server info2 127.0.0.1:12352", f"server info2 {LOOPBACK}:{infoSecond}"),
        ("check inter 2s fall 3 rise 2\n    server sockplay1",
         "check inter 100ms fall 1 rise 1\n    server sockplay1"),
        ("stats socket /run/haproxy/sockplay.sock", f"stats socket {statsSocket}"),
    ])


def _replaced(path: Path, changes: list[tuple[str, str]]) -> str:
    """
    The text of C{path} with each change made, each found exactly once.
    """
    text = path.read_text()
    for old, new in changes:
        assert text.count(old) == 1, f"{old!r} is not in {path} exactly once"
        text = text.replace(old, new)
    return text


def startBackends(start: Start, *args: str) -> tuple[list[ServerProcess], list[int], list[int]]:
    """
    The two sockplay instances of the recipe: each with an echo and an
    info listener behind the PROXY protocol, on ephemeral ports.

    @return: the servers, their echo ports and their info ports.
    """
    servers, infoPorts = [], []
    for _ in range(2):
        server = start(
            [*TWISTD, "--listen", f"haproxy:tcp:0:interface={LOOPBACK}",
             "--info", f"haproxy:tcp:0:interface={LOOPBACK}", *args]
        )
        server.waitUntilReady()
        servers.append(server)
        infoPorts.append(next(
            int(match.group(1))
            for line in server.output
            if (match := re.search(r"connection info on haproxy:tcp:127\.0\.0\.1:(\d+) ", line))
        ))
    return servers, [server.port for server in servers], infoPorts


def startHAProxy(
    start: Start,
    haproxy: str,
    serverPorts: list[int],
    infoPorts: list[int],
    directory: Path,
    tls: bool = False,
) -> tuple[ServerProcess, dict[str, int], Path]:
    """
    Start HAProxy in the foreground (C{-db}, and C{-W} so that it says when
    its listeners are up) on free frontend ports in front of
    C{serverPorts} and C{infoPorts}; with C{tls}, with C{deploy/haproxy/tls.cfg}
    too (its certificates in C{directory/certs}).

    @return: HAProxy, its frontends' ports by name (C{echo}, C{info},
        C{tls}) and its stats socket.
    """
    statsSocket = directory / "haproxy.sock"
    config = directory / "haproxy.cfg"
    tlsConfig = directory / "tls.cfg"
    for _ in range(PORT_TRIES):
        ports = {"echo": freePort(), "info": freePort(), "tls": freePort()}
        config.write_text(haproxyTestConfig(ports, serverPorts, infoPorts, statsSocket))
        command = [haproxy, "-W", "-db", "-f", str(config)]
        if tls:
            tlsConfig.write_text(_replaced(HAPROXY_TLS_CONFIG, [
                ("bind 127.0.0.1:12353", f"bind {LOOPBACK}:{ports['tls']}"),
            ]))
            command += ["-f", str(tlsConfig)]
        proxy = start(command)
        line = proxy.waitForLine(
            lambda line: "Loading success." in line or "cannot bind socket" in line,
            "that it has started",
        )
        if "Loading success." in line:
            return proxy, ports, statsSocket
        # A port was taken in the meantime: HAProxy exits; try others.
        proxy.waitForExit()
    pytest.fail(f"HAProxy found no free ports in {PORT_TRIES} tries")


def serverStates(statsSocket: Path) -> dict[str, int]:
    """
    The operational state of each server of the C{sockplay} backend, from
    HAProxy's runtime API: 0 is down, 2 is up.
    """
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(SOCKET_TIMEOUT)
        sock.connect(str(statsSocket))
        sock.sendall(b"show servers state sockplay\n")
        with sock.makefile("rb") as replies:
            text = replies.read().decode()
    states = {}
    for line in text.splitlines():
        fields = line.split()
        # "be_id be_name srv_id srv_name srv_addr srv_op_state ...".
        if len(fields) > 5 and not line.startswith("#"):
            states[fields[3]] = int(fields[5])
    return states


def lineRequest(port: int, message: str) -> str:
    """
    Connect to C{port} from L{CLIENT_ADDRESS}, send C{message} as a line,
    read the reply line, close.

    @return: the reply, its LF included (an empty string if the connection
        closed without one).
    """
    with socket.socket() as sock:
        sock.settimeout(SOCKET_TIMEOUT)
        sock.bind((CLIENT_ADDRESS, 0))
        sock.connect((LOOPBACK, port))
        sock.sendall(message.encode() + b"\n")
        with sock.makefile("rb") as replies:
            return replies.readline().decode("utf-8", "replace")


def listenersOf(port: int, count: int, start: int) -> list[str]:
    """
    Send C{count} requests to C{port}, one connection each, and check that
    every one got its templated reply: the server's host name, its
    listener, and the client's address as the PROXY header told it.

    @return: the listener that answered each request.
    """
    hostname = socket.gethostname()
    listeners = []
    wrong = []
    for number in range(start, start + count):
        message = f"request {number}"
        reply = lineRequest(port, message)
        match = re.fullmatch(rf"([^|]*)\|([^|]*)\|([^|]*): {message}\n", reply)
        if match is None or (match[1], match[3]) != (hostname, CLIENT_ADDRESS):
            wrong.append((message, reply))
        else:
            listeners.append(match[2])
    assert not wrong, f"{len(wrong)} of {count} replies are wrong, first: {wrong[:3]}"
    return listeners


def test_haproxyBalancesAndFailsOver(processes: Start, tmp_path: Path) -> None:
    """
    Two sockplay servers behind HAProxy, run with the shipped configuration
    (test ports, fast health checks): 500 requests through HAProxy are all
    answered, by both servers, which see the client's own address through
    the PROXY protocol. Once one server is killed and HAProxy has marked it
    down, 100 more requests are all answered by the other.
    """
    haproxy = requireTool("haproxy", "haproxy")
    servers, ports, infoPorts = startBackends(
        processes, "--framing", "line", "--keep-open", "--prefix", "{hostname}|{listener}|{peer}: "
    )
    proxy, frontPorts, statsSocket = startHAProxy(processes, haproxy, ports, infoPorts, tmp_path)
    frontPort = frontPorts["echo"]
    assert serverStates(statsSocket) == {"sockplay1": 2, "sockplay2": 2}

    listeners = listenersOf(frontPort, 500, start=0)
    assert set(listeners) == {f"tcp:{LOOPBACK}:{port}" for port in ports}

    killed, survivor = servers
    killed.process.kill()
    killed.waitForExit()
    proxy.waitForLine(
        lambda line: "Server sockplay/sockplay1 is DOWN" in line, "that sockplay1 is down"
    )
    assert serverStates(statsSocket) == {"sockplay1": 0, "sockplay2": 2}

    listeners = listenersOf(frontPort, 100, start=500)
    assert set(listeners) == {f"tcp:{LOOPBACK}:{survivor.port}"}
    assert survivor.process.poll() is None

    # HAProxy's health checks (a PROXY header, then a reset, every 100 ms
    # here) are probes, logged at debug level only: never as "reset".
    survivor.process.terminate()
    survivor.waitForExit()
    closed = [line for line in survivor.output if "Connection closed: " in line]
    assert closed, survivor.transcript()
    assert [line for line in closed if ", reset, " in line or ", probe, " in line] == []


def infoThrough(port: int) -> dict[str, Any]:
    """
    Connect to C{port} from L{CLIENT_ADDRESS} and read the info object.
    """
    with socket.socket() as sock:
        sock.settimeout(SOCKET_TIMEOUT)
        sock.bind((CLIENT_ADDRESS, 0))
        sock.connect((LOOPBACK, port))
        with sock.makefile("rb") as lines:
            info: dict[str, Any] = json.loads(lines.readline())
    return info


def tlvsOf(info: dict[str, Any]) -> dict[str, Any]:
    return {tlv["name"]: tlv["value"] for tlv in info["proxy"]["tlvs"]}


def test_haproxyRecipe(processes: Start, tmp_path: Path) -> None:
    """
    The recipe of C{deploy/haproxy/}, run as shipped (test ports): through
    HAProxy, each instance's info listener reports the original client's
    address, PROXY version 2 and HAProxy's TLVs (its unique ID and
    checksum; from the TLS frontend of C{tls.cfg}, the ALPN protocol, the
    server name and the client's TLS details with its certificate's CN);
    both instances answer, and the client's C{--tally} reports both, half
    each (round robin), 20 replies in all.
    """
    haproxy = requireTool("haproxy", "haproxy")
    certs = subprocess.run(
        [sys.executable, "-m", "sockplay.certs", "certs"], cwd=tmp_path, capture_output=True,
        timeout=DEADLINE, check=True,
    )
    assert certs.returncode == 0
    (tmp_path / "certs" / "haproxy.pem").write_bytes(
        (tmp_path / "certs" / "server.pem").read_bytes()
        + (tmp_path / "certs" / "server-key.pem").read_bytes()
    )
    servers, ports, infoPorts = startBackends(processes, "--prefix", "{hostname}:{pid} ")
    proxy, frontPorts, _ = startHAProxy(processes, haproxy, ports, infoPorts, tmp_path, tls=True)

    pids = set()
    for _ in range(4):
        info = infoThrough(frontPorts["info"])
        assert info["proxy"]["version"] == 2
        assert info["proxy"]["source"]["address"] == CLIENT_ADDRESS
        tlvs = tlvsOf(info)
        assert re.fullmatch(r"0x[0-9a-f]{8}", tlvs["crc32c"])
        assert tlvs["unique_id"]
        assert info["tls"] is None
        pids.add(info["pid"])
    assert pids == {server.process.pid for server in servers}

    tally = subprocess.run(
        [sys.executable, "-m", "sockplay.client", "--port", str(frontPorts["echo"]),
         "--count", "20", "--interval", "0", "--tally", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=DEADLINE, check=True,
    )
    report = json.loads(tally.stdout)["tally"]
    assert report["replies"] == 20
    hostname = socket.gethostname()
    assert {backend["identity"] for backend in report["backends"]} == {
        f"{hostname}:{server.process.pid} " for server in servers
    }
    assert [backend["count"] for backend in report["backends"]] == [10, 10]
    assert sum(backend["share"] for backend in report["backends"]) == pytest.approx(1.0)

    context = ssl.create_default_context(cafile=str(tmp_path / "certs" / "ca.pem"))
    context.load_cert_chain(
        str(tmp_path / "certs" / "client.pem"), str(tmp_path / "certs" / "client-key.pem")
    )
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((LOOPBACK, frontPorts["tls"]), timeout=SOCKET_TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            with sock.makefile("rb") as lines:
                info = json.loads(lines.readline())
    tlvs = tlvsOf(info)
    assert tlvs["alpn"] == "h2" and tlvs["authority"] == "localhost"
    assert tlvs["ssl"]["client"] == {"ssl": True, "cert_conn": True, "cert_sess": True}
    assert tlvs["ssl"]["verify"] == 0
    sslTLVs = {sub["name"]: sub["value"] for sub in tlvs["ssl"]["tlvs"]}
    assert sslTLVs["version"].startswith("TLSv1.")
    assert sslTLVs["cn"] and sslTLVs["cipher"]
    assert proxy.process.poll() is None


def test_systemdSocketActivation(processes: Start, tmp_path: Path) -> None:
    """
    Under C{systemd-socket-activate}, which holds the listening socket and
    starts the server on the first connection, C{--listen
    systemd:domain=INET:index=0} adopts that socket: the client's first
    connection gets its reply.
    """
    activate = requireTool("systemd-socket-activate", "systemd")
    for _ in range(PORT_TRIES):
        port = freePort()
        # --fdname: Twisted adopts inherited sockets only when they are
        # named, as systemd always names them (LISTEN_FDNAMES).
        holder = processes(
            [activate, "--listen", f"{LOOPBACK}:{port}", "--fdname=sockplay", "--",
             *TWISTD, "--listen", "systemd:domain=INET:index=0"]
        )
        line = holder.waitForLine(
            lambda line: "Listening on " in line or "Address already in use" in line,
            "that it holds the socket",
        )
        if line.startswith(f"Listening on {LOOPBACK}:{port} as 3."):
            break
        # The port was taken in the meantime: the tool exits; try another.
        holder.waitForExit()
    else:
        pytest.fail(f"systemd-socket-activate found no free port in {PORT_TRIES} tries")
    result = subprocess.run(
        [sys.executable, "-m", "sockplay.client", "--port", str(port)],
        cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=DEADLINE, check=False,
    )
    reply = "Response from the server: Message received: Hello Server !\n"
    assert (result.returncode, result.stdout, result.stderr) == (0, reply, ""), (
        holder.transcript()
    )
    assert holder.waitUntilReady() == port


def loadYAML(name: str) -> dict[str, Any]:
    """
    One manifest of C{deploy/k8s/}.
    """
    document = yaml.safe_load((DEPLOY / "k8s" / name).read_text())
    assert isinstance(document, dict)
    return document


def dockerInstructions() -> list[tuple[str, str]]:
    """
    The Dockerfile's instructions, as (keyword, arguments), with continued
    lines joined and comments left out.
    """
    text = (REPO / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerfileUser() -> str:
    """
    The user the container runs as (the last C{USER}).
    """
    users = [arguments for keyword, arguments in dockerInstructions() if keyword == "USER"]
    assert users, "the Dockerfile has no USER: the server would run as root"
    return users[-1]


def test_dockerfileRunsServerAsNonRoot() -> None:
    """
    The image is a slim Python image, installs the package with pip, runs as
    a numeric non-root user, exposes 12345 and serves there on every
    interface of the container in the foreground.
    """
    instructions = dockerInstructions()
    keywords = dict(instructions)
    assert re.fullmatch(r"python:3\.\d+-slim", keywords["FROM"]), keywords["FROM"]
    assert any(
        keyword == "RUN" and re.search(r"\bpip install\b", arguments)
        for keyword, arguments in instructions
    )
    user, _, _ = dockerfileUser().partition(":")
    assert user.isdigit() and user != "0", user
    assert keywords["EXPOSE"] == "12345"
    command = yaml.safe_load(keywords["CMD"])
    assert command == ["twistd", "-n", "--pidfile=", "sockplay", "--listen", "tcp:12345"]


def test_dockerfileHealthcheckUsesClient() -> None:
    """
    The image's health check is one request made by the package's client.
    """
    healthchecks = [
        arguments for keyword, arguments in dockerInstructions() if keyword == "HEALTHCHECK"
    ]
    assert len(healthchecks) == 1
    options, _, command = healthchecks[0].partition("CMD ")
    assert "--timeout=" in options
    assert yaml.safe_load(command)[:3] == ["python", "-m", "sockplay.client"]


def test_dockerignoreKeepsWhatPipNeeds() -> None:
    """
    The build context keeps every file that C{pip install .} reads, and
    leaves out the repository's history and local environments.
    """
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(fnmatch(prefix, pattern) for pattern in patterns for prefix in prefixes)

    needed = ["setup.cfg", "pyproject.toml", "README.md", "sockplay/__init__.py",
              "sockplay/server/tap.py", "twisted_plugins/sockplay_plugin.py"]
    assert [path for path in needed if ignored(path)] == []
    assert all(ignored(path) for path in [".git", ".venv", "build", "tests"])


def test_k8sProbesAndGracePeriod() -> None:
    """
    The pods have TCP readiness and liveness probes on the server's port,
    and a grace period longer than the preStop pause plus the server's
    drain timeout, so that SIGKILL never cuts a drain short.
    """
    pod = loadYAML("deployment.yaml")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"echo": 12345}
    for probe in ("readinessProbe", "livenessProbe"):
        port = container[probe]["tcpSocket"]["port"]
        assert ports.get(port, port) == 12345, probe
    preStop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert preStop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > float(preStop[1]) + DEFAULT_DRAIN_TIMEOUT


def test_k8sRunsAsImageUser() -> None:
    """
    The pods must run as non-root, as the image's user.
    """
    pod = loadYAML("deployment.yaml")["spec"]["template"]["spec"]
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert f"{context['runAsUser']}:{context['runAsGroup']}" == dockerfileUser()
    [container] = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_k8sServiceAndBudgetSelectThePods() -> None:
    """
    The Service and the PodDisruptionBudget select the Deployment's pods,
    the Service forwards to the server's port, and the budget lets a drain
    evict one pod at a time without ever blocking it.
    """
    deployment = loadYAML("deployment.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = loadYAML("service.yaml")
    assert service["spec"]["selector"].items() <= labels.items()
    [port] = service["spec"]["ports"]
    assert (port["port"], port["targetPort"], port["protocol"]) == (12345, "echo", "TCP")
    budget = loadYAML("pdb.yaml")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 0 < budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_haproxyConfigValid(tmp_path: Path) -> None:
    """
    HAProxy accepts the shipped configuration (C{haproxy -c}), alone and
    with C{tls.cfg} (given the certificates its comments say to make).
    """
    haproxy = requireTool("haproxy", "haproxy")
    result = subprocess.run(
        [haproxy, "-c", "-f", str(HAPROXY_CONFIG)],
        capture_output=True, text=True, timeout=DEADLINE, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    subprocess.run(
        [sys.executable, "-m", "sockplay.certs", "certs"], cwd=tmp_path, capture_output=True,
        timeout=DEADLINE, check=True,
    )
    certs = tmp_path / "certs"
    (certs / "haproxy.pem").write_bytes(
        (certs / "server.pem").read_bytes() + (certs / "server-key.pem").read_bytes()
    )
    result = subprocess.run(
        [haproxy, "-c", "-f", str(HAPROXY_CONFIG), "-f", str(HAPROXY_TLS_CONFIG)],
        cwd=tmp_path, capture_output=True, text=True, timeout=DEADLINE, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_systemdUnitsVerify(tmp_path: Path) -> None:
    """
    C{systemd-analyze verify} accepts the socket and service units (with the
    service's C{ExecStart} pointed at this environment's C{twistd}, which it
    requires to exist), and the service's sandbox rates as exposed no more
    than 2.0 out of 10.
    """
    analyze = requireTool("systemd-analyze", "systemd")
    twistd = Path(sys.executable).parent / "twistd"
    assert twistd.exists(), twistd
    units = DEPLOY / "systemd"
    service = (units / "sockplay.service").read_text()
    assert service.count("ExecStart=/opt/sockplay/bin/twistd ") == 1
    (tmp_path / "sockplay.service").write_text(
        service.replace("ExecStart=/opt/sockplay/bin/twistd ", f"ExecStart={twistd} ")
    )
    shutil.copy(units / "sockplay.socket", tmp_path / "sockplay.socket")
    for command in (
        [analyze, "verify", "sockplay.socket", "sockplay.service"],
        [analyze, "security", "--offline=yes", "--threshold=20", "sockplay.service"],
    ):
        result = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=DEADLINE, check=False
        )
        assert (result.returncode, result.stderr) == (0, ""), result.stdout + result.stderr


def test_systemdServiceAdoptsTheSocket() -> None:
    """
    The service adopts the socket unit's one IPv4 socket and runs without an
    account of its own, with time to drain on stop.
    """
    service = (DEPLOY / "systemd" / "sockplay.service").read_text()
    socketUnit = (DEPLOY / "systemd" / "sockplay.socket").read_text()
    assert re.findall(r"^ListenStream=(.*)$", socketUnit, re.MULTILINE) == ["127.0.0.1:12345"]
    [execStart] = re.findall(r"^ExecStart=(.*)$", service, re.MULTILINE)
    assert shlex.split(execStart)[1:] == [
        "-n", "--pidfile=", "sockplay", "--listen", "systemd:domain=INET:index=0"
    ]
    assert re.search(r"^DynamicUser=yes$", service, re.MULTILINE)
    [stopTimeout] = re.findall(r"^TimeoutStopSec=(\d+)$", service, re.MULTILINE)
    assert int(stopTimeout) > DEFAULT_DRAIN_TIMEOUT
