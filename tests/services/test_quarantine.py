"""A poisoned event: quarantined and visible, the projector halts in front of it, the rest of
the control plane keeps serving, and nothing after the event is applied or skipped, until an
admin skips it (`meshlog quarantine skip`): then the projector goes on by itself, and a replay
skips it too."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from events import connect_nats, resource_subject
from tests.harness import VENV_BIN, ControlPlane, meshlog_up, wait_for
from tests.services._scrape import scrape, value

pytestmark = pytest.mark.integration


def _publish_raw(cp: ControlPlane, subject: str, data: bytes) -> int:
    async def publish() -> int:
        nc = await connect_nats(cp.where["nats"], name="test", credentials=cp.nats_creds)
        try:
            ack = await nc.jetstream().publish(subject, data, headers={"Meshlog-Schema": "1"})
            return ack.seq
        finally:
            await nc.close()

    return asyncio.run(publish())


def _dp(name: str) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name, "networking": {
        "address": "10.0.0.1", "inbound": [{"port": 80, "tags": {"kuma.io/service": name}}]}}


def test_undecodable_event_is_quarantined_and_halts_the_projector(tmp_path: Path) -> None:
    with meshlog_up(tmp_path / "cp") as cp:
        cp.apply({"type": "Mesh", "name": "default"})
        cp.apply(_dp("before"))
        bad_seq = _publish_raw(cp, resource_subject("Dataplane", "default", "poison"),
                               b'{"event": "dataplane.exploded", "at": 1}')
        after = cp.api.put("/meshes/default/dataplanes/after", json=_dp("after"))
        assert after.status_code == 201
        assert after.headers.get("meshlog-projection") == "pending"  # not applied: halted

        items = wait_for(lambda: cp.api.get("/_quarantine").json()["items"], timeout=60,
                         what="a quarantined event")
        assert items[0]["seq"] == bad_seq
        assert "dataplane.exploded" in items[0]["reason"]
        ready = cp.api.get("/ready").json()
        assert ready["projectedSequence"] == bad_seq - 1
        assert ready["quarantinedEvents"] == 1
        metrics = scrape(cp.where["api"] + "/metrics")
        assert value(metrics, "meshlog_quarantined_events") == 1
        assert value(metrics, "meshlog_projector_quarantined_events_total") == 1
        assert cp.api.get("/meshes/default/dataplanes/before").status_code == 200
        assert cp.api.get("/meshes/default/dataplanes/after").status_code == 404

        cli = subprocess.run([str(VENV_BIN / "meshlog"), "--api", cp.where["api"],
                              "quarantine"], capture_output=True, text=True, timeout=60)
        assert cli.returncode == 1 and f"#{bad_seq}" in cli.stdout

    with meshlog_up(tmp_path / "cp") as again:  # a restart stops in the same place
        wait_for(lambda: again.api.get("/_quarantine").json()["total"] == 1, timeout=60,
                 what="the quarantine after a restart")
        assert again.api.get("/ready").json()["projectedSequence"] == bad_seq - 1


def test_a_malformed_schema_header_is_quarantined_not_a_crash(tmp_path: Path) -> None:
    with meshlog_up(tmp_path / "cp") as cp:
        cp.apply({"type": "Mesh", "name": "default"})

        async def publish() -> int:
            nc = await connect_nats(cp.where["nats"], name="test", credentials=cp.nats_creds)
            try:
                ack = await nc.jetstream().publish(
                    resource_subject("Mesh", None, "odd"), b"{}", headers={"Meshlog-Schema": "x"})
                return ack.seq
            finally:
                await nc.close()

        bad_seq = asyncio.run(publish())
        items = wait_for(lambda: cp.api.get("/_quarantine").json()["items"], timeout=60,
                         what="the quarantined event")
        assert items[0]["seq"] == bad_seq and "schema version 0" in items[0]["reason"]
        assert cp.proc.poll() is None  # still serving


def _meshlog(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "meshlog"), *args], capture_output=True, text=True,
                          timeout=120)


def test_a_skipped_event_lets_the_projector_go_on_and_replays_the_same(tmp_path: Path) -> None:
    """Garbage no release can read: the operator skips it, the halted projector notices the
    decision by itself, folds it as nothing, applies what came after, and the quarantine is
    empty; a replay into a fresh store makes the same read models, byte for byte."""
    data = tmp_path / "cp"
    with meshlog_up(data) as cp:
        api = cp.where["api"]
        cp.apply({"type": "Mesh", "name": "default"})
        cp.apply(_dp("before"))
        bad_seq = _publish_raw(cp, resource_subject("Dataplane", "default", "poison"),
                               b'{"event": "dataplane.exploded", "at": 1}')
        assert cp.api.put("/meshes/default/dataplanes/after", json=_dp("after")).headers.get(
            "meshlog-projection") == "pending"
        wait_for(lambda: cp.api.get("/_quarantine").json()["total"] == 1, timeout=60,
                 what="the quarantined event")
        halted = scrape(api + "/metrics")
        assert value(halted, "meshlog_projector_skipped_events_total") == 0
        assert value(halted, "meshlog_skipped_events") == 0

        skip = _meshlog("--api", api, "quarantine", "skip", "--seq", str(bad_seq),
                        "--reason", "garbage from a foreign writer")
        assert skip.returncode == 0, skip.stderr
        assert f"sequence {bad_seq} (meshlog.ev.default.dataplane.default.poison) skipped" in (
            skip.stdout)
        wait_for(lambda: cp.api.get("/meshes/default/dataplanes/after").status_code == 200,
                 timeout=60, what="the projector resuming by itself")
        later = cp.api.put("/meshes/default/dataplanes/later", json=_dp("later"))
        assert later.status_code == 201 and "meshlog-projection" not in later.headers

        listing = cp.api.get("/_quarantine").json()
        assert listing["total"] == 0
        [skipped] = listing["skipped"]
        assert (skipped["seq"], skipped["by"], skipped["reason"]) == (
            bad_seq, "mesh-system:admin", "garbage from a foreign writer")
        assert cp.api.get("/ready").json()["quarantinedEvents"] == 0
        metrics = scrape(api + "/metrics")
        assert value(metrics, "meshlog_quarantined_events") == 0
        # the decision followed, counted by the projector; the skipped row, by the API
        assert value(metrics, "meshlog_projector_skipped_events_total", projector="main") == 1
        assert value(metrics, "meshlog_skipped_events") == 1
        listed = _meshlog("--api", api, "quarantine")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert f"skipped #{bad_seq} " in listed.stdout and "no quarantined events" in (
            listed.stdout)
        again = _meshlog("--api", api, "quarantine", "skip", "--seq", str(bad_seq),
                         "--reason", "twice")
        assert again.returncode == 0 and "was already skipped" in again.stdout

        head = cp.stream_last_seq()
        wait_for(lambda: cp.api.get("/ready").json()["projectedSequence"] == head,
                 what="the projector at the head of the log")
        live = _meshlog("export", "--data-dir", str(data))
        target = f"sqlite:///{tmp_path / 'replayed.db'}"
        replay = _meshlog("replay", "--data-dir", str(data), "--database", target, "-q")
        assert replay.returncode == 0, replay.stderr
        replayed = _meshlog("export", "--database", target)
        assert live.returncode == replayed.returncode == 0
        assert replayed.stdout == live.stdout  # byte for byte, the skipped row too
    log = (data / "nats" / "nats-server.log").read_text()
    assert [line for line in log.splitlines() if "Violation" in line] == []


def test_a_skip_is_refused_for_an_event_that_folds_and_for_a_non_admin(tmp_path: Path) -> None:
    with meshlog_up(tmp_path / "cp") as cp:
        api = cp.where["api"]
        mesh_seq = cp.apply({"type": "Mesh", "name": "default"}).json()["version"]
        head = cp.stream_last_seq()

        healthy = _meshlog("--api", api, "quarantine", "skip", "--seq", str(mesh_seq),
                           "--reason", "by mistake")
        assert healthy.returncode == 1
        assert f"sequence {mesh_seq} (meshlog.ev.default.mesh._.default) is not quarantined" \
            in healthy.stderr
        assert cp.api.post("/_quarantine/skips", json={"seq": mesh_seq, "reason": "x"}
                           ).status_code == 409
        missing = cp.api.post("/_quarantine/skips", json={"seq": head + 100, "reason": "x"})
        assert missing.status_code == 404
        assert f"sequence {head + 100}: the log holds no event there" in missing.json()["detail"]
        bad = cp.api.post("/_quarantine/skips", json={"seq": "7", "reason": " ", "why": 1})
        assert bad.status_code == 400
        assert [p["field"] for p in bad.json()["invalid_parameters"]] == ["why", "seq", "reason"]

        token = cp.api.post("/tokens/user", json={"name": "jane", "groups": ["ops"]}).text
        as_jane = _meshlog("--api", api, "--token", token, "quarantine", "skip", "--seq",
                           str(mesh_seq), "--reason", "x")
        assert as_jane.returncode == 1 and "403" in as_jane.stderr
        assert cp.stream_last_seq() == head  # nothing appended
