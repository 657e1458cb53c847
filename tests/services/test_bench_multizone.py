"""A tiny run of `meshlog bench multizone --proxies N`: a real global and two zones (three
`meshlog up`), simulated proxies on east's gateway. It checks the report's shape and that each
round was seen by east's bucket and ACKed by every proxy, never the speed."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.harness import VENV_BIN

pytestmark = pytest.mark.integration


def test_bench_multizone_to_proxies_reports_positive_figures_as_its_last_line() -> None:
    done = subprocess.run(
        [str(VENV_BIN / "meshlog"), "bench", "multizone", "--proxies", "5", "--rounds", "3"],
        capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert (figures["proxies"], figures["rounds"]) == (5, 3)
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"], figures
    assert 0 < figures["bucket_p50_ms"] <= figures["bucket_p99_ms"], figures
    assert "round 2: deregister west's target-1: in east's bucket after" in done.stderr
    assert "round 3: register west's target-1" in done.stderr


def test_bench_multizone_mmzs_waits_for_availability_changes() -> None:
    done = subprocess.run(
        [str(VENV_BIN / "meshlog"), "bench", "multizone", "--proxies", "5", "--rounds", "2",
         "--mmzs"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert (figures["proxies"], figures["rounds"], figures["mmzs"]) == (5, 2, True)
    assert 0 < figures["p50_ms"] <= figures["max_ms"], figures
    assert "round 2: deregister west's target-1: in east's bucket after" in done.stderr
