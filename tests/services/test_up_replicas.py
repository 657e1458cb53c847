"""`meshlog up --stream-replicas`: with `--nats-url` on a real 3-node JetStream cluster, the
streams and buckets `meshlog up` creates are replicated as asked; the embedded nats-server
refuses more than one replica."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from events import connect_nats
from events.subjects import EVENTS_STREAM
from services.runtime.nats_cluster import run_nats_cluster
from tests.harness import VENV_BIN, meshlog_up

pytestmark = pytest.mark.integration

STREAMS = (EVENTS_STREAM, "KV_meshlog_projections", "KV_meshlog_insights")


async def test_meshlog_up_on_a_cluster_makes_its_streams_with_the_replicas_asked(
        tmp_path: Path) -> None:
    async with run_nats_cluster(tmp_path / "nats") as cluster:
        with meshlog_up(tmp_path / "cp", "--nats-url", cluster.urls,
                        "--stream-replicas", "3", start_timeout=90) as cp:
            assert cp.apply({"type": "Mesh", "name": "default"}).status_code == 201
            nc = await connect_nats(cluster.urls, name="test", reconnect=False)
            try:
                js = nc.jetstream()
                replicas = {name: (await js.stream_info(name)).config.num_replicas
                            for name in STREAMS}
            finally:
                await nc.close()
    assert replicas == dict.fromkeys(STREAMS, 3)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_meshlog_up_refuses_replicas_the_embedded_server_cannot_keep(
        how: str, tmp_path: Path) -> None:
    args = ["--stream-replicas", "3"] if how == "flag" else []
    environ = {**os.environ, "MESHLOG_STREAM_REPLICAS": "3"} if how == "env" else None
    result = subprocess.run(
        [str(VENV_BIN / "meshlog"), "up", "--data-dir", str(tmp_path / "cp"), "--api-port", "0",
         "--xds-port", "0", *args], capture_output=True, text=True, timeout=60, env=environ)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --stream-replicas 3 (MESHLOG_STREAM_REPLICAS): only with --nats-url (a "
        "JetStream cluster of at least 3 nodes); the embedded nats-server is one node and "
        "keeps 1 copy")
    assert not (tmp_path / "cp" / "nats").exists()  # refused before anything started
