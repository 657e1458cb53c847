"""A poisoned event: quarantined and visible, the projector halts in front of it, the rest of
the control plane keeps serving, and nothing after the event is applied or skipped."""

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

        items = wait_for(lambda: cp.api.get("/_quarantine").json()["items"], timeout=10,
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
        wait_for(lambda: again.api.get("/_quarantine").json()["total"] == 1, timeout=10,
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
        items = wait_for(lambda: cp.api.get("/_quarantine").json()["items"], timeout=10,
                         what="the quarantined event")
        assert items[0]["seq"] == bad_seq and "schema version 0" in items[0]["reason"]
        assert cp.proc.poll() is None  # still serving
