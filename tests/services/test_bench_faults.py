"""A small run of `meshlog bench faults`: a real 3-node cluster, its stream leader SIGKILLed
under an append load through a real API, then restarted. It checks what must hold whatever
the speed: nothing acknowledged is lost, nothing is stored twice, the projector and the
gateway carry on. Never the stall's length."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.harness import VENV_BIN

pytestmark = pytest.mark.integration


def test_bench_faults_loses_and_duplicates_nothing_and_everything_carries_on() -> None:
    done = subprocess.run(
        [str(VENV_BIN / "meshlog"), "bench", "faults", "--proxies", "3", "--writers", "2",
         # the load runs 11 s after the kill: longer than nats-server's election (4-9 s after
         # its leader is lost), so an event is stored, and committed, after the kill
         "--warmup", "2", "--down", "5", "--after", "6"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert (figures["stream_replicas"], figures["bucket_replicas"]) == (3, 3)
    assert figures["appends_acknowledged"] > 0 and figures["appends_failed"] == 0, figures
    assert (figures["lost"], figures["duplicates"]) == (0, 0), figures
    assert figures["events_stored"] == figures["appends_acknowledged"], figures
    assert figures["projector_caught_up"] and figures["gateway_serving"], figures
    assert figures["leader_killed"] in ("n1", "n2", "n3")
    assert figures["max_stall_s"] > 0
    # where the stall went: the node killed held the stream's leader; a new one was elected
    # and stored events after the kill, which the projector committed (the API's ack may
    # come after the load, or not at all, in so short a run)
    steps = figures["after_kill_s"]
    assert "MESHLOG_EVENTS leader" in figures["on_killed_node"], figures
    assert 0 < steps["MESHLOG_EVENTS_leader"], steps
    assert 0 < steps["first_stored"] <= steps["first_committed"], steps
    assert "SIGKILLed the stream leader" in done.stderr
