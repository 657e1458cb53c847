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


def _projector(urls: str, tmp_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return popen([str(VENV_BIN / "meshlog"), "projector", "--nats-url", urls,
                      "--stream-replicas", "3", "--lease-ttl", "0",
                      "--data-dir", str(tmp_path / "data"),
                      "--database", f"sqlite:///{tmp_path / 'readmodels.db'}"],
                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _meshlog_up(urls: str, data_dir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return popen([str(VENV_BIN / "meshlog"), "up", "--data-dir", str(data_dir),
                      "--api-port", "0", "--xds-port", "0", "--nats-url", urls,
                      "--stream-replicas", "3"],
                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


async def test_a_projector_started_before_its_cluster_has_a_quorum_waits_for_it(
        tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "nats", 3)
    try:
        await cluster.start("n1", wait=False)  # one of three: no meta leader, no JetStream
        log_path = tmp_path / "projector.log"
        proc = _projector(cluster.urls, tmp_path, log_path)
        try:
            await _logged(log_path, "JetStream is not ready yet", proc)
            await cluster.start("n2", "n3")
            await _logged(log_path, "resuming after sequence", proc, within_s=60)
            logged = await asyncio.to_thread(log_path.read_text)
            assert logged.count("JetStream is not ready yet") == 1
        finally:
            stop_process(proc)
    finally:
        await cluster.stop()


async def test_meshlog_up_started_before_its_cluster_has_a_quorum_waits_for_it(
        tmp_path: Path) -> None:
    """`meshlog up --nats-url` on a cluster that cannot place its R3 stream yet waits too
    (before, it exited with the first EventLogUnavailable, or a CI run's start stalled)."""
    cluster = NatsCluster(tmp_path / "nats", 3)
    try:
        await cluster.start("n1", wait=False)
        data_dir = tmp_path / "cp"
        log_path = tmp_path / "up.log"
        proc = _meshlog_up(cluster.urls, data_dir, log_path)
        try:
            await _logged(log_path, "JetStream is not ready yet", proc)
            await cluster.start("n2", "n3")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 90
            while not (data_dir / "up.json").exists():
                logged = await asyncio.to_thread(log_path.read_text)
                assert proc.poll() is None, f"exited {proc.returncode}:\n{logged[-3000:]}"
                assert loop.time() < deadline, f"no up.json; its log ends:\n{logged[-3000:]}"
                await asyncio.sleep(0.2)
            logged = await asyncio.to_thread(log_path.read_text)
            assert logged.count("JetStream is not ready yet") == 1
        finally:
            stop_process(proc)
    finally:
        await cluster.stop()
