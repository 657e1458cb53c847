"""A tiny run of `meshlog bench propagation`: real nats-server, projector, gateway, LB Envoy
and simulated proxies, end to end. It checks the report's shape, never the speed."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.harness import VENV_BIN

pytestmark = pytest.mark.integration

KEYS = {"proxies", "gateways", "rounds", "p50_ms", "p99_ms", "max_ms", "rss_kb_per_proxy",
        "connect_all_s"}


def test_bench_propagation_reports_positive_figures_as_its_last_line() -> None:
    done = subprocess.run(
        [str(VENV_BIN / "meshlog"), "bench", "propagation", "--proxies", "5", "--rounds", "2"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert KEYS <= figures.keys(), figures
    assert (figures["proxies"], figures["gateways"], figures["rounds"]) == (5, 1, 2)
    for key in ("p50_ms", "p99_ms", "max_ms", "connect_all_s"):
        assert figures[key] > 0, (key, figures)
    # 5 streams may fit in memory the gateway already had: growth is >= 0, not always > 0
    assert figures["rss_kb_per_proxy"] >= 0, figures
    assert figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert "round 2: deregister probe-0" in done.stderr


def test_bench_propagation_rejects_a_bad_proxy_count() -> None:
    done = subprocess.run(
        [str(VENV_BIN / "meshlog"), "bench", "propagation", "--proxies", "many"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "--proxies" in done.stderr and "'many'" in done.stderr


def test_bench_rotation_reports_every_proxys_new_certificate() -> None:
    """`meshlog bench rotation` end to end with 6 proxies: each wave is done only when every
    proxy has ACKed an SDS response with an identity certificate it did not hold."""
    done = subprocess.run(
        [str(VENV_BIN / "meshlog"), "bench", "rotation", "--proxies", "6", "--rounds", "2"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert (figures["proxies"], figures["rounds"]) == (6, 2)
    assert 0 < figures["wave_p50_ms"] <= figures["wave_max_ms"], figures
    assert figures["projector_cpu_s_per_wave"] >= 0 and figures["gateway_cpu_s_per_wave"] >= 0
    assert "wave 2: every proxy ACKed its new certificate" in done.stderr
