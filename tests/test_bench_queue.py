"""The benches' reading of DESIGN.md's absolute targets: scaled by the machine's speed
(``bench.common.Speed``), measured with ``bench.bare``; and ``bench.queue``'s summary."""

from __future__ import annotations

import json
import urllib.request

import pytest

from bench import queue
from bench.common import PlainStack, Speed
from tests.support import ROOT


def wrk(rate: float, p99: str) -> str:
    """The lines of wrk's ``--latency`` output that the summary reads."""
    return (f"  Latency Distribution\n     50%    4.00ms\n     90%    6.00ms\n"
            f"     99%   {p99}\n  100 requests in 10.00s, 1.00MB read\n"
            f"Requests/sec:  {rate}\n")


def test_a_target_scales_with_bare_aiohttp_both_ways() -> None:
    assert Speed(21_800, 5.0).line(10) == 10.0
    assert round(Speed(10_900, 9.0).line(10), 6) == 20.0  # half as fast: twice the time
    assert round(Speed(43_600, 3.0).line(25), 6) == 12.5  # twice as fast: half


def test_a_verdict_gives_the_scaled_line_and_the_unscaled_one() -> None:
    slow = Speed(10_900, 9.0)
    assert slow.verdict(15.0, 10, "ms") == "<= 10 ms x 2.00 = 20.0 ms: met (unscaled: missed)"
    assert slow.verdict(21.0, 10, "ms") == "<= 10 ms x 2.00 = 20.0 ms: MISSED (unscaled: missed)"
    fast = Speed(43_600, 3.0)
    assert fast.verdict(4.0, 5, "s") == "<= 5 s x 0.50 = 2.5 s: MISSED (unscaled: met)"


def test_the_summary_judges_each_phase_by_the_speed_measured_before_it(capsys) -> None:
    # Given a token issue measured at half the reference's speed (p99 15 ms) and a poll
    # measured at the reference's speed (p99 12 ms)
    queue.compare({
        "bazaar": {"issue": wrk(5000, "15.00ms"), "poll": wrk(6000, "12.00ms")},
        "plain": {"issue": wrk(2000, "40.00ms"), "poll": wrk(2000, "50.00ms")},
    }, {"issue": Speed(10_900, 9.0), "poll": Speed(21_800, 5.0)})
    out = " ".join(capsys.readouterr().out.split())
    # Then each p99 meets or misses its own line, and the unscaled verdict is beside it
    assert ("token issue p99 (ms) 15.00 40.00 0.38 "
            "<= 10 ms x 2.00 = 20.0 ms: met (unscaled: missed)") in out
    assert ("position poll p99 (ms) 12.00 50.00 0.24 "
            "<= 10 ms x 1.00 = 10.0 ms: MISSED (unscaled: missed)") in out
    assert "token issue (req/s) 5,000 2,000 2.50 (0.46 of bare aiohttp)" in out


def test_the_summary_without_plain_still_judges(capsys) -> None:
    queue.compare({"bazaar": {"issue": wrk(5000, "8.00ms"), "poll": wrk(6000, "9.00ms")},
                   "plain": {}}, {"issue": Speed(21_800, 5.0), "poll": Speed(21_800, 5.0)})
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("met (unscaled: met)") == 2
    assert "token issue p99 (ms) 8.00 - - <= 10 ms" in out


def test_bare_aiohttp_answers_a_constant() -> None:
    stack = PlainStack({}, module="bench.bare")
    stack.start_web()
    try:
        with urllib.request.urlopen(f"{stack.api.base}/bare", timeout=5) as reply:
            assert reply.status == 200 and json.load(reply) == {"ok": True}
    finally:
        stack.stop()


def test_web_pairs_runs_the_base_from_its_own_tree_and_reports_medians_and_ratios(
        tmp_path) -> None:
    from bench import web_pairs

    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "__init__.py").write_text("")
    assert web_pairs.runs_from(tmp_path) == tmp_path.resolve()  # (not this tree's code)
    base = [(1000.0, 10.0, 80.0), (1200.0, 9.0, 70.0), (900.0, 12.0, 90.0)]
    this = [(1100.0, 8.0, 60.0), (1320.0, 9.0, 70.0), (990.0, 6.0, 66.0)]
    assert web_pairs.summary("base", base) == (
        "  base  rates 1,000 1,200 900; median 1,000/s, p99 10.00 ms, "
        "web CPU 80.0 us a request")
    assert web_pairs.ratios(base, this) == (
        "  this / base: rate 1.100, p99 0.800, CPU a request 0.825")


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="a source tarball has no history")
def test_web_pairs_checks_the_base_out_and_removes_it_afterwards() -> None:
    from bench import web_pairs

    with web_pairs.worktree("HEAD") as tree:
        assert (tree / "web" / "app.py").exists()
        assert web_pairs.runs_from(tree) == tree.resolve()
    assert not tree.exists()
