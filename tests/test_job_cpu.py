"""The job path's CPU bench runs every charge it measures, Bazaar's and the plain one,
and refuses to print figures when a charge did not succeed."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support import ROOT


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.job_cpu", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_it_prints_both_builds_per_slice_and_their_ratio():
    done = run("--jobs", "400", "--rounds", "2")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "400 charges each, 2 alternating slices of 180" in out
    for build in ("Bazaar", "plain"):
        line = next(line for line in out.splitlines() if line.startswith(f"{build}: "))
        figures = [float(n) for n in re.findall(r"(\d+) \((\d+)\)", line)[0]]
        assert len(re.findall(r"\d+ \(\d+\)", line)) == 2 and min(figures) > 0
    assert re.search(r"Bazaar / plain \d+\.\d\d", out)
    assert re.search(r"Redis \(PING\) \d+ us, PostgreSQL \(SELECT 1\) \d+ us", out)


def test_a_charge_that_fails_stops_the_bench():
    # 10,000,000 points is the balance cap: the charges of a user past it fail
    done = subprocess.run(
        [sys.executable, "-c",
         "import sys; import bench.job_cpu as b; b.AMOUNT = 1_000_000; "
         "sys.argv = ['job_cpu', '--jobs', '2400', '--rounds', '1']; b.main()"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "charges succeeded" in done.stderr
