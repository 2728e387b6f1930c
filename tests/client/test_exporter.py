"""
Tests for L{sockplay.client.exporter}, the probe exporter: the metrics
each probe's result updates (fake results, no real time), the C{/metrics}
page, where it listens and how it fails to, and the command with
C{--metrics} on a memory reactor.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest
from support.client import HELLO, REPLY, fired
from support.fakes import acceptLatest, pumpWithHalfClose, refuseLatest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock, _FakePort
from twisted.web.resource import getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from sockplay.client.command import _main
from sockplay.client.exporter import (
    OTHER_BACKENDS,
    RTT_BUCKETS,
    ProbeMetrics,
    backendLabel,
    listenForMetrics,
    makeExporterResource,
    metricsURL,
)
from sockplay.client.failures import OUTCOMES, ClientError
from sockplay.client.options import Options
from sockplay.client.requests import ProbeResult
from sockplay.server import EchoReplyFactory, ServerSettings
from sockplay.tally import IDENTITY_KEPT, MAX_IDENTITIES
from sockplay.website import LimitedFactory, ReadOnlyChannel

CONNECT = "tcp:host=127.0.0.1:port=12345"
REFUSED = ProbeResult(2, error="connection refused by x", outcome="refused")


def sample(metrics: ProbeMetrics, name: str, **labels: str) -> float | None:
    """
    The current value of one sample of C{metrics}.
    """
    return metrics.registry.get_sample_value(name, labels)


def results(metrics: ProbeMetrics) -> dict[str, float | None]:
    """
    C{sockplay_probe_results_total}, by result.
    """
    return {r: sample(metrics, "sockplay_probe_results_total", result=r) for r in OUTCOMES}


def test_everyResultPresentFromTheStart() -> None:
    """
    Before any probe, every result is counted at 0 (so that C{rate()} sees
    the first one), the probe is not up, and no round-trip time is
    counted.
    """
    metrics = ProbeMetrics()
    assert results(metrics) == dict.fromkeys(
        ["ok", "refused", "timeout", "reset", "closed", "bad-reply", "tls"], 0.0
    )
    assert sample(metrics, "sockplay_probe_up") == 0
    assert sample(metrics, "sockplay_probe_rtt_seconds_count") == 0


def test_echoCountsOkAndItsTime() -> None:
    """
    A probe answered with an echo counts as C{ok}, sets C{up} to 1 and
    puts its round-trip time in the histogram.
    """
    metrics = ProbeMetrics()
    metrics.observe(ProbeResult(1, 0.0003, REPLY))
    assert results(metrics)["ok"] == 1
    assert sample(metrics, "sockplay_probe_up") == 1
    assert sample(metrics, "sockplay_probe_rtt_seconds_count") == 1
    assert sample(metrics, "sockplay_probe_rtt_seconds_sum") == 0.0003
    assert sample(metrics, "sockplay_probe_rtt_seconds_bucket", le="0.00025") == 0
    assert sample(metrics, "sockplay_probe_rtt_seconds_bucket", le="0.0005") == 1


@pytest.mark.parametrize("outcome", ["refused", "timeout", "reset", "closed", "bad-reply", "tls"])
def test_failureCountsItsResultAndDownsTheProbe(outcome: str) -> None:
    """
    A lost probe counts under its result, sets C{up} to 0, and adds no
    round-trip time.
    """
    metrics = ProbeMetrics()
    metrics.observe(ProbeResult(1, 0.001, REPLY))
    metrics.observe(ProbeResult(2, error="lost", outcome=outcome))
    counted = results(metrics)
    assert (counted["ok"], counted[outcome]) == (1, 1)
    assert sum(v or 0 for v in counted.values()) == 2
    assert sample(metrics, "sockplay_probe_up") == 0
    assert sample(metrics, "sockplay_probe_rtt_seconds_count") == 1


def test_upFollowsTheLastProbe() -> None:
    """
    C{up} is the last probe's: down after a failure, up again after the
    next echo.
    """
    metrics = ProbeMetrics()
    ups = []
    for result in [ProbeResult(1, 0.001, REPLY), REFUSED, ProbeResult(3, 0.001, REPLY)]:
        metrics.observe(result)
        ups.append(sample(metrics, "sockplay_probe_up"))
    assert ups == [1, 0, 1]


def test_interruptedProbeNotCounted() -> None:
    """
    A probe cut short by SIGINT or SIGTERM says nothing of the server: no
    result is counted and C{up} stays as it was.
    """
    metrics = ProbeMetrics()
    metrics.observe(ProbeResult(1, 0.001, REPLY))
    metrics.observe(ProbeResult(2, error="interrupted before the reply", outcome="interrupted"))
    assert sum(v or 0 for v in results(metrics).values()) == 1
    assert sample(metrics, "sockplay_probe_up") == 1


def test_bucketsFrom100MicrosecondsTo10Seconds() -> None:
    """
    The histogram's buckets run from 100 µs to 10 s, in increasing order.
    """
    assert RTT_BUCKETS[0] == 0.0001 and RTT_BUCKETS[-1] == 10.0
    assert list(RTT_BUCKETS) == sorted(set(RTT_BUCKETS))
    metrics = ProbeMetrics()
    metrics.observe(ProbeResult(1, 30.0, REPLY))
    assert sample(metrics, "sockplay_probe_rtt_seconds_bucket", le="10.0") == 0
    assert sample(metrics, "sockplay_probe_rtt_seconds_bucket", le="+Inf") == 1


def test_tallyLabelsTimesWithTheBackend() -> None:
    """
    With C{--tally}, the round-trip times are labelled with the identity of
    the backend that answered; the results are not.
    """
    metrics = ProbeMetrics(HELLO)
    metrics.observe(ProbeResult(1, 0.001, b"web1 " + HELLO))
    metrics.observe(ProbeResult(2, 0.002, b"web2 " + HELLO))
    metrics.observe(ProbeResult(3, 0.003, b"web1 " + HELLO))
    assert sample(metrics, "sockplay_probe_rtt_seconds_count", backend="web1 ") == 2
    assert sample(metrics, "sockplay_probe_rtt_seconds_count", backend="web2 ") == 1
    assert sample(metrics, "sockplay_probe_rtt_seconds_count") is None
    assert results(metrics)["ok"] == 3


def test_tallyBackendsBounded() -> None:
    """
    Past the tally's L{MAX_IDENTITIES} identities, replies count under the
    other row's label, as the tally counts them: a server that answers
    with a new identity every time cannot make the metrics grow without
    end. An identity seen before the bound keeps its own label.
    """
    metrics = ProbeMetrics(HELLO)
    for n in range(MAX_IDENTITIES + 10):
        metrics.observe(ProbeResult(n + 1, 0.001, b"%d " % (n,) + HELLO))
    metrics.observe(ProbeResult(999, 0.001, b"0 " + HELLO))
    labels = {
        s.labels["backend"]
        for family in metrics.registry.collect()
        for s in family.samples
        if "backend" in s.labels
    }
    assert len(labels) == MAX_IDENTITIES + 1
    assert sample(metrics, "sockplay_probe_rtt_seconds_count", backend=OTHER_BACKENDS) == 10
    assert sample(metrics, "sockplay_probe_rtt_seconds_count", backend="0 ") == 2


def test_backendLabelAsTheTallyShowsIt() -> None:
    """
    The label is the identity as text, any byte that is not UTF-8 as a
    backslash escape, cut to L{IDENTITY_KEPT} bytes with C{...} after a
    cut one.
    """
    assert backendLabel(b"web1[42] ") == "web1[42] "
    assert backendLabel(b"caf\xe9 ") == "caf\\xe9 "
    long = b"x" * (IDENTITY_KEPT + 1)
    assert backendLabel(long) == "x" * IDENTITY_KEPT + "..."


def get(metrics: ProbeMetrics, path: bytes) -> tuple[int, bytes]:
    """
    Render C{GET path} on the exporter's resources with a fake request.

    @return: the status and the body.
    """
    request = DummyRequest(path.split(b"/")[1:])
    resource = getChildForRequest(makeExporterResource(metrics), request)
    body = resource.render(request)
    if body == NOT_DONE_YET:
        assert request.finished
        body = b"".join(request.written)
    assert isinstance(body, bytes)
    return request.responseCode or 200, body


def test_metricsPageIsTheRegistry() -> None:
    """
    C{/metrics} is the exporter's registry in the Prometheus text format.
    """
    metrics = ProbeMetrics()
    metrics.observe(ProbeResult(1, 0.001, REPLY))
    status, body = get(metrics, b"/metrics")
    assert status == 200
    assert body == generate_latest(metrics.registry)
    assert b'sockplay_probe_results_total{result="ok"} 1.0' in body


@pytest.mark.parametrize("path", [b"/", b"/healthz", b"/metrics/x"])
def test_otherPathsNotFound(path: bytes) -> None:
    """
    Every path but C{/metrics} is 404.
    """
    assert get(ProbeMetrics(), path)[0] == 404


@pytest.mark.parametrize(
    "address, url",
    [
        (IPv4Address("TCP", "127.0.0.1", 9465), "http://127.0.0.1:9465/metrics"),
        (IPv6Address("TCP", "::1", 9465), "http://[::1]:9465/metrics"),
    ],
)
def test_metricsURL(address: Any, url: str) -> None:
    """
    A TCP port's metrics are at C{http://HOST:PORT/metrics}.
    """
    assert metricsURL(_FakePort(address)) == url


def test_metricsURLOfAnotherAddress() -> None:
    """
    Another kind of port is named by its address.
    """
    address = UNIXAddress("/run/probe.sock")
    assert metricsURL(_FakePort(address)) == str(address)


class BusyReactor(MemoryReactorClock):
    """
    A memory reactor whose every TCP port is taken.
    """

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        raise CannotListenError(interface, port, OSError(98, "Address already in use"))


def test_listenOnABusyPort() -> None:
    """
    A port that is taken is a L{ClientError} whose one line names the
    endpoint and the reason.
    """
    d = Deferred.fromCoroutine(
        listenForMetrics(BusyReactor(), "tcp:9465:interface=127.0.0.1", ProbeMetrics())
    )
    failure = fired(d)
    assert not isinstance(failure, _FakePort)
    assert failure.check(ClientError)  # type: ignore[union-attr]
    assert str(failure.value) == (  # type: ignore[union-attr]
        "cannot listen on tcp:9465:interface=127.0.0.1 for --metrics: Address already in use"
    )


def test_listensOnTheEndpoint() -> None:
    """
    The site listens on the endpoint given, with the site bounded as the
    server's metrics site is.
    """
    reactor = MemoryReactorClock()
    port = fired(
        Deferred.fromCoroutine(
            listenForMetrics(reactor, "tcp:9465:interface=127.0.0.1", ProbeMetrics())
        )
    )
    assert isinstance(port, _FakePort)
    [(number, factory, _, interface)] = reactor.tcpServers
    assert (number, interface) == (9465, "127.0.0.1")
    assert isinstance(factory, LimitedFactory) and factory.name == "the metrics site"
    assert factory.wrappedFactory.protocol is ReadOnlyChannel


def runExporter(
    reactor: MemoryReactorClock, *argv: str
) -> tuple[Deferred[None], Options]:
    """
    Start the command with C{--count 0 --metrics} and C{argv} (line
    framing) on C{reactor}.
    """
    config = Options()
    config.parseOptions(
        ["--connect", CONNECT, "--count", "0", "--framing", "line", "--interval", "1",
         "--metrics", "tcp:9465:interface=127.0.0.1", *argv]
    )
    return Deferred.fromCoroutine(_main(reactor, config)), config


def stop(reactor: MemoryReactorClock) -> None:
    """
    Ask the command to stop, as SIGTERM does.
    """
    [(trigger, args, kwargs)] = reactor.triggers["before"]["shutdown"]
    trigger(*args, **kwargs)


def scrape(reactor: MemoryReactorClock, path: bytes = b"/metrics") -> bytes:
    """
    What the site that the command listens with answers to C{GET path}.
    """
    [(_, factory, _, _)] = reactor.tcpServers
    request = DummyRequest(path.split(b"/")[1:])
    body = getChildForRequest(factory.wrappedFactory.resource, request).render(request)
    assert isinstance(body, bytes)
    return body


def test_commandServesWhatItProbes(capsys: pytest.CaptureFixture[str]) -> None:
    """
    C{--count 0 --metrics} says where it serves the metrics, and its site
    counts the probes as they end: an echo, then a refused connection.
    Stopped (as by SIGTERM), it prints the statistics, stops listening and
    ends without an error although a probe was lost (exit status 0: an
    exporter's losses are in its metrics).
    """
    reactor = MemoryReactorClock()
    done, _ = runExporter(reactor)
    factory = EchoReplyFactory(ServerSettings("line"), clock=reactor)
    pumpWithHalfClose(acceptLatest(reactor, factory.buildProtocol(None)))
    assert b'sockplay_probe_results_total{result="ok"} 1.0' in scrape(reactor)
    assert b"sockplay_probe_up 1.0" in scrape(reactor)
    reactor.advance(1)
    refuseLatest(reactor)
    assert b'sockplay_probe_results_total{result="refused"} 1.0' in scrape(reactor)
    assert b"sockplay_probe_up 0.0" in scrape(reactor)
    stop(reactor)
    assert fired(done) is None
    out, err = capsys.readouterr()
    assert err == (
        "Serving metrics on http://0.0.0.0:9465/metrics (tcp:9465:interface=127.0.0.1)\n"
    )
    assert out.splitlines()[-2:] == [
        f"--- {CONNECT} probe statistics ---",
        "2 sent, 1 received, 50% loss, rtt min/avg/max/mdev = 0.000/0.000/0.000/0.000 ms",
    ]


def test_commandOnABusyPort(capsys: pytest.CaptureFixture[str]) -> None:
    """
    A C{--metrics} port that is taken ends the command before any probe,
    with one line and exit status 1.
    """
    reactor = BusyReactor()
    done, _ = runExporter(reactor)
    failure = fired(done)
    assert failure.value.code == 1  # type: ignore[union-attr]
    assert reactor.tcpClients == []
    assert capsys.readouterr().err == (
        "Error: cannot listen on tcp:9465:interface=127.0.0.1 for --metrics: "
        "Address already in use\n"
    )


def test_commandWithTallyLabelsBackends(capsys: pytest.CaptureFixture[str]) -> None:
    """
    With C{--tally}, the metrics label the round-trip times with the
    backend, and the tally is printed when stopped, as without
    C{--metrics}.
    """
    reactor = MemoryReactorClock()
    done, _ = runExporter(reactor, "--tally", "--keep-open")
    factory = EchoReplyFactory(ServerSettings("line", True, prefix=b"web1 "), clock=reactor)
    pump = acceptLatest(reactor, factory.buildProtocol(None))
    for _ in range(3):
        pump.flush()
        reactor.advance(1)
    pump.flush()
    assert b'sockplay_probe_rtt_seconds_count{backend="web1 "} 4.0' in scrape(reactor)
    stop(reactor)
    pump.flush()
    assert fired(done) is None
    out = capsys.readouterr().out.splitlines()
    assert "--- tally: 4 replies from 1 backend ---" in out
    assert out[-1] == "sticky: yes (every reply on the connection came from one backend)"
