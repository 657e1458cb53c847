"""`meshlog grpc-identity` when its gateway ends the stream after serving it (max connection
age, a rolling restart: DESIGN "Scale-out"), against a real grpcio server speaking ADS."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse
from google.protobuf.any_pb2 import Any

from services.runtime.grpc_identity import IdentityFiles, IdentityOptions, run_identity_agent
from tests.harness import wait_for
from tests.services.test_grpc_identity_files import _pair
from xds_gateway.resources.tls import ca_secret, identity_secret
from xds_gateway.type_urls import SECRET


def _serve_once_then_end(request_iterator: Iterator[DiscoveryRequest],
                         context: grpc.ServicerContext) -> Iterator[DiscoveryResponse]:
    """Answer the Secrets, take the ACK, then end the stream as a gateway past its max
    connection age does."""
    next(request_iterator)
    cert, key = _pair(1)
    response = DiscoveryResponse(type_url=SECRET, version_info="1", nonce="1")
    for secret in (identity_secret("default", cert, key), ca_secret("default", (cert,))):
        packed = Any()
        packed.Pack(secret)
        response.resources.append(packed)
    yield response
    next(request_iterator)  # the ACK
    context.abort(grpc.StatusCode.UNAVAILABLE, "max connection age")


def _ads_serving_once() -> tuple[grpc.Server, int]:
    """A real grpcio server speaking ADS as `_serve_once_then_end`, started; its port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        {"StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            _serve_once_then_end, request_deserializer=DiscoveryRequest.FromString,
            response_serializer=DiscoveryResponse.SerializeToString)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def test_a_stream_that_served_is_retried_at_once_not_after_a_growing_backoff(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server, port = _ads_serving_once()
    caplog.set_level(logging.WARNING, logger="services.runtime.grpc_identity")
    stop, writes = threading.Event(), []
    options = IdentityOptions(mesh="default", name="client-1", xds_address=f"127.0.0.1:{port}",
                              files=IdentityFiles.in_dir(tmp_path / "identity"))
    agent = threading.Thread(target=run_identity_agent, args=(options,), daemon=True,
                             kwargs={"stop": stop, "written": lambda: writes.append(1)})
    agent.start()
    try:
        wait_for(lambda: len(writes) >= 4, timeout=60, what="four streams served")
    finally:
        stop.set()
        agent.join(timeout=30)
        server.stop(None)
    retries = [float(m.group(1)) for r in caplog.records
               if (m := re.search(r"retrying in ([\d.]+) s", r.getMessage()))]
    assert len(retries) >= 3 and set(retries) == {0.5}, retries


def test_a_write_that_fails_is_said_and_tried_again_on_the_next_stream(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A write the disk refuses (here `.data` taken by a directory, where the agent switches a
    link) ends the stream, not the agent: it says so, keeps the last files, and writes once
    the next stream brings the secrets again and the disk takes them."""
    server, port = _ads_serving_once()
    caplog.set_level(logging.WARNING, logger="services.runtime.grpc_identity")
    directory = tmp_path / "identity"
    (directory / ".data").mkdir(parents=True)
    (directory / ".data" / "in-the-way").write_text("x")
    stop, writes = threading.Event(), []
    options = IdentityOptions(mesh="default", name="client-1", xds_address=f"127.0.0.1:{port}",
                              files=IdentityFiles.in_dir(directory))
    agent = threading.Thread(target=run_identity_agent, args=(options,), daemon=True,
                             kwargs={"stop": stop, "written": lambda: writes.append(1)})
    agent.start()
    try:
        wait_for(lambda: any("cannot write the identity" in r.getMessage()
                             for r in caplog.records), timeout=30, what="the failed write said")
        assert agent.is_alive() and not writes
        (directory / ".data" / "in-the-way").unlink()
        (directory / ".data").rmdir()
        wait_for(lambda: writes, timeout=30, what="the identity written on a later stream")
        assert (directory / "cert.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE")
    finally:
        stop.set()
        agent.join(timeout=30)
        server.stop(None)
