"""``bench.queue``'s summary: the target's verdict and the machine-scaled line beside it."""

from __future__ import annotations

from bench import queue


def wrk(rate: float, p99: str) -> str:
    """The lines of wrk's ``--latency`` output that the summary reads."""
    return (f"  Latency Distribution\n     50%    4.00ms\n     90%    6.00ms\n"
            f"     99%   {p99}\n  100 requests in 10.00s, 1.00MB read\n"
            f"Requests/sec:  {rate}\n")


def test_the_line_scales_with_bare_aiohttp_and_never_drops_under_10_ms() -> None:
    assert queue.scaled_line(21_800) == 10.0
    assert queue.scaled_line(43_600) == 10.0  # a faster machine keeps the 10 ms line
    assert round(queue.scaled_line(10_900), 6) == 20.0


def test_the_summary_gives_the_target_and_the_scaled_line_apart(capsys) -> None:
    # Given a machine at half the reference's bare rate, a token p99 of 15 ms (over the
    # target, within the scaled 20 ms) and a poll p99 of 25 ms (over both)
    queue.compare({
        "bazaar": {"issue": wrk(5000, "15.00ms"), "poll": wrk(6000, "25.00ms")},
        "plain": {"issue": wrk(2000, "40.00ms"), "poll": wrk(2000, "50.00ms"),
                  "bare": wrk(10_900, "9.00ms")},
    })
    out = capsys.readouterr().out
    # Then the target's verdicts stay DESIGN.md's, and the scaled line is printed apart
    assert "token issue p99 (ms)" in out and out.count("p99 <= 10 ms: MISSED") == 2
    assert ("10 ms scaled by bare aiohttp (21,800 / 10,900) = 20.0 ms; "
            "token issue 15.00 ms within, position poll 25.00 ms over") in out
