"""The soak under faults, short: ``bench.soak`` with 12 s of load instead of 5 minutes.

Its own PostgreSQL and Redis, 2 web, 2 worker and 2 scheduler processes; a worker, a
web process, the active scheduler, Redis and PostgreSQL are each killed once, right
after a burst of commands, and restarted. Every guarantee must hold afterwards.
"""

from __future__ import annotations

import pytest

from bench.soak import FAULTS, run_soak

pytestmark = pytest.mark.e2e


def test_a_short_soak_under_every_fault_keeps_every_guarantee():
    # Given the whole system under a mixed load, When each fault strikes once
    report = run_soak(seconds=12, clients=12, outage=1.0, settle=120)
    print(report.text)
    # Then after each fault, service came back and every job in flight finished
    assert [f.kind for f in report.faults] == list(FAULTS), report.text
    assert all(f.serving is not None and f.finished is not None for f in report.faults), \
        report.text
    # ... including the backlog Redis lost, which only the re-send sweep could send again
    assert len(next(f for f in report.faults if f.kind == "redis").in_flight) >= 100
    # ... no accepted command was lost or left unfinished, no answer was a 500, and no
    # process gave up by itself (a scheduler rides out the Redis outage, say)
    assert (report.lost, report.unfinished, report.server_errors) == ([], [], 0), report.text
    assert report.exited == [], report.text
    # ... and every invariant holds
    assert [o.line() for o in report.invariants if o.ok is False] == [], report.text
    assert report.ok
