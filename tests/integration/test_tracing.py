"""One `apply`, one connected trace: the API request, the append, the projector's batch (linked
to the write), its publish, the gateway's push and a real Envoy's ACK.

Real parts in one process so one in-memory exporter sees every span: a real nats-server, the
API app (through ASGI), the projector and a gateway following the projection bus on one event
loop, and a real Envoy (a subprocess) connected to that gateway over SotW ADS.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from nats.aio.client import Client as NATS
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from events import JetStreamEventLog
from events.bus.projection_bus import JetStreamProjectionBus
from events.commands import Commands
from projections import Projector, open_store
from services.api.app import create_app
from services.cli.bootstrap import sidecar_bootstrap
from tests.harness import Envoy, eventually, run_envoy
from tests.tracing import attributes, in_memory_tracing, int_attribute, parent_id
from xds_gateway import Gateway

pytestmark = [
    pytest.mark.integration,
    # services/api.py's list routes use litestar's inferred query style; not this test's topic
    pytest.mark.filterwarnings("ignore::litestar.exceptions.LitestarDeprecationWarning"),
]
T = TypeVar("T")


def _dataplane(name: str, address: str, port: int, service: str) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, "inbound": [
                {"port": port, "name": "http", "protocol": "http",
                 "tags": {"kuma.io/service": service}}]}}


async def _put(api: httpx.AsyncClient, doc: dict[str, Any]) -> None:
    path = ("/meshes/" + doc["name"] if doc["type"] == "Mesh" else
            f"/meshes/{doc['mesh']}/dataplanes/{doc['name']}")
    response = await api.put(path, json=doc)
    assert response.status_code in (200, 201), response.text


def _hosts(envoy: Envoy, cluster: str) -> set[str]:
    parts = (line.split("::") for line in envoy.admin.get("/clusters").text.splitlines())
    return {p[1] for p in parts if len(p) == 4 and p[0] == cluster and p[2] == "health_flags"}


@contextlib.asynccontextmanager
async def _envoy(port: int, workdir: Path) -> AsyncIterator[Envoy]:
    """A real Envoy for `default.web-1`, started off the event loop (the gateway serves it)."""
    bootstrap = sidecar_bootstrap(mesh="default", name="web-1", xds_host="127.0.0.1",
                                  xds_port=port, admin_port=0)
    with contextlib.ExitStack() as stack:
        envoy = await asyncio.to_thread(stack.enter_context,
                                        run_envoy(bootstrap, workdir, "web-1"))
        try:
            yield envoy
        finally:
            await asyncio.to_thread(stack.close)


def _one(spans: list[ReadableSpan], what: str) -> ReadableSpan:
    assert len(spans) == 1, f"{what}: {[s.name for s in spans]}"
    return spans[0]


async def test_one_apply_is_one_trace_from_the_api_to_envoys_ack(nc: NATS,
                                                                 tmp_path: Path) -> None:
    backend = "default_backend___msvc_8080"
    with in_memory_tracing() as exporter:
        event_log = await JetStreamEventLog.open(nc)
        bus = await JetStreamProjectionBus.open(nc)
        db = f"sqlite:///{tmp_path / 'rm.db'}"
        writer, reader = await open_store(db), await open_store(db)
        app = create_app(Commands(event_log, zone="default"), reader)
        gateway = Gateway(bus, port=0, no_auth=True)
        assert gateway.pushes is not None  # the process traces: the gateway traces pushes
        try:
            # Litestar's scope is a TypedDict, httpx wants a MutableMapping:
            async with asyncio.TaskGroup() as tg, httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
                    base_url="http://api") as api:
                tasks = [tg.create_task(Projector(event_log, writer, bus, zone="default").run()),
                         tg.create_task(gateway.run())]
                await gateway.serving.wait()
                assert gateway.port is not None
                await _put(api, {"type": "Mesh", "name": "default"})
                await _put(api, _dataplane("backend-1", "127.0.0.2", 8080, "backend"))
                await _put(api, _dataplane("web-1", "127.0.0.4", 8081, "web"))
                async with _envoy(gateway.port, tmp_path / "envoy") as envoy:
                    await eventually(lambda: asyncio.to_thread(
                        lambda: _hosts(envoy, backend) == {"127.0.0.2:8080"}),
                        "Envoy's first config", within=30.0)
                    # let the pushes of the set-up end, then trace one write alone
                    await eventually(lambda: _idle(gateway), "the set-up's pushes to end",
                                     within=30.0)
                    exporter.clear()
                    await _put(api, _dataplane("backend-2", "127.0.0.3", 8080, "backend"))
                    await eventually(lambda: asyncio.to_thread(
                        lambda: _hosts(envoy, backend) == {"127.0.0.2:8080", "127.0.0.3:8080"}),
                        "the new endpoint in Envoy", within=30.0)
                    push = await eventually(lambda: _acked_push(exporter.get_finished_spans()),
                                            "the write's push span with Envoy's ACK", within=30.0)
                for task in tasks:
                    task.cancel()
        finally:
            await reader.close()
            await writer.close()
        spans = exporter.get_finished_spans()

    request = _one([s for s in spans if s.kind == SpanKind.SERVER], "API request spans")
    assert request.name == "PUT /meshes/{mesh}/{plural}/{name}"
    assert attributes(request)["http.response.status_code"] == 201
    trace_id = request.context.trace_id
    append = _one([s for s in spans if s.name == "meshlog.append"
                   and s.context.trace_id == trace_id], "appends of the write")
    assert parent_id(append) == request.context.span_id
    fold = _one([s for s in spans if s.name == "meshlog.projector.fold"
                 and any(link.context.span_id == append.context.span_id for link in s.links)],
                "projector batches linked to the append")
    assert parent_id(fold) == append.context.span_id  # the batch held this write alone
    publish = _one([s for s in spans if s.name == "meshlog.projector.publish"
                    and parent_id(s) == fold.context.span_id], "publishes of the batch")
    assert parent_id(push) == publish.context.span_id
    assert {s.context.trace_id for s in (append, fold, publish, push)} == {trace_id}
    # the push reached Envoy, and Envoy ACKed every response it got for it
    assert attributes(push)["meshlog.xds.proxies"] == 1
    assert attributes(push)["meshlog.xds.proxies_acked"] == 1
    assert attributes(push)["meshlog.xds.nacks"] == 0
    assert int_attribute(push, "meshlog.xds.acks") == int_attribute(
        push, "meshlog.xds.responses") >= 1
    [acked] = [e for e in push.events if e.name == "acked"]
    assert attributes(acked)["meshlog.node_id"] == "default.web-1"


async def _idle(gateway: Gateway) -> bool:
    assert gateway.pushes is not None
    return gateway.pushes.open_push is None


async def _acked_push(spans: tuple[ReadableSpan, ...]) -> ReadableSpan | None:
    """The push span of the write of backend-2 once it has Envoy's ACK."""
    writes = {s.context.trace_id for s in spans if s.kind == SpanKind.SERVER
              and str(attributes(s).get("url.path", "")).endswith("/backend-2")}
    pushes = [s for s in spans if s.name == "meshlog.gateway.push"
              and s.context.trace_id in writes and attributes(s).get("meshlog.xds.proxies_acked")]
    return pushes[0] if pushes else None
