"""A JetStream cluster of `nats-server` processes on loopback, for `meshlog bench faults` and
the fault tests (DESIGN.md, Scale-out: "tested on loopback with nats-server processes, leader
killed under load").

Each node (jetstream-rules.md, 3-node config) has its own `server_name`, the same cluster
name, client, cluster and monitoring ports on 127.0.0.1, `routes` to every node's cluster
port, and its own store dir. Ports are picked once, when the cluster is made, and kept: a
node killed and started again comes back on the same ports with the same store, as a
restarted pod would. They are picked outside the kernel's ephemeral range (`unused_ports`),
so no other process takes one while its node is down. A node is ready when its monitoring
`/healthz` says so (JetStream in contact with a meta leader, its streams current).

With `route_delay_s`, nodes are that far apart: each node's cluster port is reached through a
`SlowLink` (the port it advertises to the others and the one in their `routes`), so every
route, configured or learned, carries that latency, as between hosts. A follower then applies
a write some time after the leader acknowledged it, as it does on a real network.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from services.errors import ProcessStartError
from services.runtime._slow_link import SlowLink
from services.runtime.embedded_nats import find_nats_server
from services.runtime.spawn import spawn

__all__ = ["NatsCluster", "NatsNode", "run_nats_cluster", "unused_ports"]

CLUSTER_NAME = "meshlog"
_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 10.0


_LOWEST_PORT = 10_000
_handed_out: set[int] = set()
_handing_out = threading.Lock()


def _ephemeral_start() -> int:
    """Where the kernel's ephemeral ports begin (`net.ipv4.ip_local_port_range`)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def unused_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free on `host` now, for processes told their port before they
    bind it (the nodes here, kept across a restart; a test's backends and sidecar inbounds).

    Not from the kernel's ephemeral range, which a `bind(("", 0))` would give: every later
    `bind` to port 0 and every outgoing `connect` of any process draws from that range, so
    one of them could take the port before the process told of it binds it (a time-of-check
    to time-of-use race, likelier the longer the wait: a node killed and started again). These
    come from below it, which the kernel never hands out by itself; each is checked free now,
    and none is handed out twice by this process."""
    top = _ephemeral_start()
    if top - _LOWEST_PORT < 1000:  # an unusual range: the ephemeral ports it is
        with contextlib.ExitStack() as stack:
            socks = [stack.enter_context(socket.socket()) for _ in range(count)]
            for sock in socks:
                sock.bind((host, 0))
            return [sock.getsockname()[1] for sock in socks]
    chosen: list[int] = []
    pick = random.SystemRandom()
    with _handing_out:
        for _ in range(100 * count):
            port = pick.randrange(_LOWEST_PORT, top)
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                chosen.append(port)
                if len(chosen) == count:
                    return chosen
    raise ProcessStartError(f"no {count} free ports on {host} in {_LOWEST_PORT}..{top - 1}")


class NatsNode:
    """One nats-server of the cluster: its ports, store and (while it runs) process."""

    def __init__(self, name: str, directory: Path, client_port: int, cluster_port: int,
                 monitor_port: int, route_port: int | None = None,
                 config: Path | None = None) -> None:
        self.name = name
        self.config = config
        """A configuration file the node reads first (the flags override it), e.g. one that
        includes `meshlog nats-users`' auth.conf."""
        self.directory = directory
        self.client_port = client_port
        self.cluster_port = cluster_port
        self.monitor_port = monitor_port
        self.route_port = route_port if route_port is not None else cluster_port
        """Where the other nodes reach this node's cluster port: the port itself, or a link
        in front of it."""
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def log_file(self) -> Path:
        return self.directory / "nats-server.log"

    async def start(self, routes: list[str]) -> None:
        if self.running:
            raise RuntimeError(f"nats-server {self.name} already runs")
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            find_nats_server(), *(["-c", str(self.config)] if self.config else []),
            "--server_name", self.name, "-js",
            "-sd", str(self.directory / "jetstream"),
            "-a", "127.0.0.1", "-p", str(self.client_port), "-m", str(self.monitor_port),
            "--cluster_name", CLUSTER_NAME, "--cluster", f"nats://127.0.0.1:{self.cluster_port}",
            "--routes", ",".join(routes),
        ]
        if self.route_port != self.cluster_port:
            args += ["--cluster_advertise", f"127.0.0.1:{self.route_port}"]
        with open(self.log_file, "ab") as log:  # noqa: ASYNC230 - the child keeps its copy
            self.proc = await spawn(args, stdout=log, stderr=log, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye to the cluster (a crash, an OOM kill)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    async def stop(self) -> None:
        """SIGTERM (nats-server flushes JetStream), SIGKILL if it does not end in time."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def wait_stopped(self) -> None:
        if self.proc is not None:
            await self.proc.wait()

    async def healthy(self, client: httpx.AsyncClient) -> bool:
        """The node's `/healthz`: 200 once its JetStream is in the cluster and current."""
        if not self.running:
            return False
        try:
            response = await client.get(f"http://127.0.0.1:{self.monitor_port}/healthz")
        except httpx.HTTPError:
            return False
        return response.status_code == 200


class NatsCluster:
    """The nodes, started and stopped one by one; `urls` is what clients are given."""

    def __init__(self, directory: Path, size: int, *, route_delay_s: float = 0.0,
                 config: Path | None = None) -> None:
        per_node = 4 if route_delay_s else 3
        ports = unused_ports(per_node * size)
        self.nodes = []
        for i in range(size):
            client, cluster, monitor, *route = ports[per_node * i:per_node * (i + 1)]
            self.nodes.append(NatsNode(f"n{i + 1}", directory / f"n{i + 1}", client, cluster,
                                       monitor, route[0] if route else None, config=config))
        self.links = [SlowLink(node.route_port, node.cluster_port, route_delay_s)
                      for node in self.nodes if node.route_port != node.cluster_port]

    @property
    def urls(self) -> str:
        """Every node's client URL, comma-separated (`--nats-url`)."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> NatsNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no nats-server named {name!r} (have {[n.name for n in self.nodes]})")

    def _routes(self) -> list[str]:
        return [f"nats://127.0.0.1:{node.route_port}" for node in self.nodes]

    async def open_links(self) -> None:
        """Start the links in front of the nodes' cluster ports (none without a route delay);
        before the nodes, which dial them."""
        for link in self.links:
            await link.start()

    async def start(self, *names: str, wait: bool = True) -> None:
        """Start the named nodes (all if none named); with `wait`, until each is healthy."""
        chosen = [self.node(n) for n in names] if names else self.nodes
        for node in chosen:
            await node.start(self._routes())
        if wait:
            await self.wait_healthy(*[node.name for node in chosen])

    async def wait_healthy(self, *names: str, timeout_s: float = _READY_TIMEOUT_S) -> None:
        """Until every named node (all if none named) answers `/healthz` with 200."""
        chosen = [self.node(n) for n in names] if names else self.nodes
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                for node in chosen:
                    if node.proc is not None and node.proc.returncode is not None:
                        raise ProcessStartError(
                            f"nats-server {node.name} exited with code {node.proc.returncode}; "
                            f"see {node.log_file}")
                healthy = {node.name: await node.healthy(client) for node in chosen}
                if all(healthy.values()):
                    return
                if loop.time() > deadline:
                    raise ProcessStartError(
                        f"nats-servers {[n for n, ok in healthy.items() if not ok]} not healthy "
                        f"within {timeout_s:.0f} s (of {list(healthy)}); see their logs under "
                        f"{chosen[0].directory.parent}")
                await asyncio.sleep(0.1)

    async def kill(self, name: str) -> None:
        """SIGKILL one node and wait until it is gone."""
        node = self.node(name)
        node.kill()
        await node.wait_stopped()

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()
        for link in self.links:
            await link.close()


@contextlib.asynccontextmanager
async def run_nats_cluster(directory: Path, *, size: int = 3, route_delay_s: float = 0.0,
                           config: Path | None = None) -> AsyncIterator[NatsCluster]:
    """A cluster of `size` nats-servers with JetStream, each storing under `directory`, its
    routes `route_delay_s` long each way, each reading `config` first if given; yielded once
    every node is healthy; every node stopped at the end."""
    cluster = NatsCluster(directory, size, route_delay_s=route_delay_s, config=config)
    try:
        await cluster.open_links()
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()
