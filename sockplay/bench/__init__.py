"""
The sockplay bench: a load generator for echo-reply servers that checks
every byte of every reply, run as C{python -m sockplay.bench}.

How it is built, from the command line down:

  - L{command <sockplay.bench.command>}: the options, C{run} and C{main};
  - L{target <sockplay.bench.target>}: where the load goes;
  - L{processes <sockplay.bench.processes>}: one load process or several,
    and the merging of their results;
  - L{loop <sockplay.bench.loop>}: one process's event loop, the
    L{Worker <sockplay.bench.loop.Worker>}, which does the socket work;
  - L{load <sockplay.bench.load>} and L{loads <sockplay.bench.loads>}: what
    the worker asks at each decision point, and one strategy per kind of
    load (keep-open, one-shot, hold; closed or open loop);
  - L{check <sockplay.bench.check>}: the requests and the reply checking,
    with an encoder of its own, so that the bench stays an independent
    judge of the server;
  - L{diagnosis <sockplay.bench.diagnosis>}: what the failures of a run
    point at, and which flag fixes it;
  - L{stats <sockplay.bench.stats>} and
    L{progress <sockplay.bench.progress>}: the results, the summary and the
    live progress line.
"""

from sockplay.bench.command import Options, main, run

__all__ = ["Options", "main", "run"]
