"""
Running the plans of a load: one in this process, or each in a load process
of its own, whose results (histograms included) merge exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from sockplay.bench.loads import makeLoad
from sockplay.bench.loop import Worker
from sockplay.bench.plan import Plan
from sockplay.bench.progress import Progress
from sockplay.bench.stats import Results

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["runPlans"]

# Seconds a load process may take, past the deadline, to report its
# results before it is killed.
REPORT_GRACE = 10.0

# Seconds between two looks at the load processes' totals (progress).
_LOOK = 0.25


def runPlans(plans: list[Plan], progress: Progress | None) -> Results:
    """
    Generate the load of C{plans}: a single plan in this process, several
    in as many load processes.

    @param progress: where to show the totals as the load runs, if
        anywhere.
    @return: the results of every plan, merged.
    """
    if len(plans) == 1:
        return _runOne(plans[0], progress)
    return _runMany(plans, progress)


def _generate(
    plan: Plan, onTick: Callable[[Worker], None], onHold: Callable[[int], None]
) -> Results:
    """
    Generate the load of C{plan} in this process.
    """
    return Worker(makeLoad(plan, onHold), onTick=onTick).run()


def _runOne(plan: Plan, progress: Progress | None) -> Results:
    """
    Run the whole load in this process.
    """

    def onTick(worker: Worker) -> None:
        if progress is not None:
            progress.update(worker.results.ok, worker.results.errorCount)

    def onHold(count: int) -> None:
        if progress is not None:
            progress.holding(count, plan.hold)

    return _generate(plan, onTick, onHold)


def _workerMain(plan: Plan, slot: int, counters: Any, holding: Any, output: Connection) -> None:
    """
    A load process: run C{plan}, keep its totals in C{counters} for the
    progress line, and send its results, as plain data, to C{output}.
    """

    def onTick(worker: Worker) -> None:
        counters[2 * slot] = worker.results.ok
        counters[2 * slot + 1] = worker.results.errorCount

    def onHold(count: int) -> None:
        holding[slot] = count + 1

    try:
        results = _generate(plan, onTick, onHold)
    except KeyboardInterrupt:
        results = Results(stopped="interrupted")
    output.send(results.toWire())
    output.close()


def _runMany(plans: list[Plan], progress: Progress | None) -> Results:
    """
    Run one plan per process and merge their results.
    """
    # Imported here: multiprocessing takes a tenth of a second to import,
    # and most runs use one process.
    import multiprocessing
    from multiprocessing.connection import wait

    methods = multiprocessing.get_all_start_methods()
    context: Any = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    counters = context.Array("q", 2 * len(plans), lock=False)
    holding = context.Array("q", len(plans), lock=False)
    processes = []
    readers: dict[Connection, int] = {}
    for slot, plan in enumerate(plans):
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(
            target=_workerMain, args=(plan, slot, counters, holding, writer), daemon=True
        )
        process.start()
        writer.close()
        processes.append(process)
        readers[reader] = slot
    merged: Results | None = None
    limit = time.monotonic() + plans[0].deadline + REPORT_GRACE
    held = False
    try:
        while readers and time.monotonic() < limit:
            try:
                ready = wait(list(readers), timeout=_LOOK)
            except KeyboardInterrupt:
                # The load processes got it too, and report what they have.
                continue
            for done in ready:
                reader = cast("Connection", done)
                slot = readers.pop(reader)
                try:
                    results = Results.fromWire(reader.recv())
                except EOFError:
                    results = Results()
                    results.addError("worker", f"load process {slot} died")
                if merged is None:
                    merged = results
                else:
                    merged.merge(results)
            if progress is not None:
                progress.update(sum(counters[0::2]), sum(counters[1::2]))
                if not held and all(holding):
                    held = True
                    progress.holding(sum(holding) - len(plans), plans[0].hold)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
            process.join()
    if merged is None:
        merged = Results(processes=0)
    for slot in readers.values():
        failed = Results(processes=0)
        failed.addError("worker", f"load process {slot} did not report in time")
        merged.merge(failed)
    return merged
