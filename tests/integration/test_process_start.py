"""A process started while JetStream cannot answer yet (a new cluster without its quorum,
processes started together by compose) waits it out, saying so once, instead of exiting."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from services.runtime.nats_cluster import NatsCluster
from tests.harness import VENV_BIN, popen, stop_process

pytestmark = pytest.mark.integration


async def _logged(log_path: Path, text: str, proc: subprocess.Popen[bytes],
                  within_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while text not in (logged := await asyncio.to_thread(log_path.read_text)):
        assert proc.poll() is None, f"exited {proc.returncode}:\n{logged[-3000:]}"
        assert loop.time() < deadline, f"no {text!r} in:\n{logged[-3000:]}"
        await asyncio.sleep(0.1)


def _started(command: str, urls: str, tmp_path: Path, log_path: Path
             ) -> subprocess.Popen[bytes]:
    """`meshlog projector` or `meshlog up` on the cluster at `urls`, with R3 streams."""
    args = (["projector", "--lease-ttl", "0",
             "--database", f"sqlite:///{tmp_path / 'readmodels.db'}"] if command == "projector"
            else ["up", "--api-port", "0", "--xds-port", "0"])
    with open(log_path, "ab") as log:
        return popen([str(VENV_BIN / "meshlog"), *args, "--nats-url", urls,
                      "--stream-replicas", "3", "--data-dir", str(tmp_path / "data")],
                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.parametrize(("command", "serving"), [("projector", "resuming after sequence"),
                                                  ("up", "meshlog is up")])
async def test_a_process_started_before_its_cluster_has_a_quorum_waits_for_it(
        command: str, serving: str, tmp_path: Path) -> None:
    """A projector, and `meshlog up --nats-url` (which exited with the first
    EventLogUnavailable before), wait for a cluster that cannot place an R3 stream yet."""
    cluster = NatsCluster(tmp_path / "nats", 3)
    try:
        await cluster.start("n1", wait=False)  # one of three: no meta leader, no JetStream
        log_path = tmp_path / f"{command}.log"
        proc = _started(command, cluster.urls, tmp_path, log_path)
        try:
            await _logged(log_path, "JetStream is not ready yet", proc)
            await cluster.start("n2", "n3")
            await _logged(log_path, serving, proc, within_s=90)
            logged = await asyncio.to_thread(log_path.read_text)
            assert logged.count("JetStream is not ready yet") == 1
        finally:
            stop_process(proc)
    finally:
        await cluster.stop()
