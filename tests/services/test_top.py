"""`meshlog top` against a real `meshlog up`: one frame with a connected proxy's numbers, the
endpoint from the data dir's up.json, a clear error for an endpoint that is down, and Ctrl-C
ending the live view quietly."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from collections.abc import Iterator

import grpc
import pytest

from tests.harness import VENV_BIN, ControlPlane, free_port, meshlog_up, popen, wait_for
from tests.xds_gateway._ads import AdsClient
from xds_gateway.type_urls import CLUSTER

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with meshlog_up(tmp_path_factory.mktemp("top")) as plane:
        yield plane


def _top(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "meshlog"), "top", "--once", *args],
                          capture_output=True, text=True, timeout=60)


def _row(output: str, *cells: str) -> list[str]:
    """The cells of the first line that starts with `cells`."""
    for line in output.splitlines():
        if line.split()[:len(cells)] == list(cells):
            return line.split()
    raise AssertionError(f"no row {cells} in:\n{output}")


def test_once_shows_a_connected_proxy_its_acks_and_the_projector(cp: ControlPlane) -> None:
    cp.apply({"type": "Mesh", "name": "default"})
    cp.apply({"type": "Dataplane", "mesh": "default", "name": "web-1", "networking": {
        "address": "10.0.0.1", "inbound": [{"port": 80, "tags": {"kuma.io/service": "web"}}]}})
    token = cp.dataplane_token("web-1")

    async def connected_top() -> str:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{cp.xds_port}") as channel:
            client = AdsClient(channel, (("authorization", token),))
            client.send(CLUSTER, node_id="default.web-1")
            client.ack(await client.recv())

            def acked() -> str | None:
                out = _top("--api", cp.where["api"]).stdout
                return out if _row(out, "Cluster")[4] == "1" else None

            # top runs in a thread: this loop keeps the stream open meanwhile
            out = await asyncio.to_thread(wait_for, acked, what="top to show the ACK")
            client.close()
            return out

    out = asyncio.run(connected_top())
    for title in ("xDS streams by protocol", "xDS by type", "projector", "NATS", "API"):
        assert re.search(rf"^{title}\b", out, re.MULTILINE), f"{title!r} not in:\n{out}"
    assert _row(out, "sotw")[1] == "1"  # one ADS stream: the proxy
    # SUBSCRIBED, RESPONSES, RESP/S (none on the first frame), ACKS, NACKS
    assert _row(out, "Cluster")[1:6] == ["1", "1", "-", "1", "0"]
    endpoint = cp.where["api"].removeprefix("http://")
    projector = _row(out, endpoint, "main")
    assert projector[2] == "no"  # lease: `meshlog up` runs one projector, no lease
    assert int(projector[4]) >= 2 and projector[5:7] == ["0", "0.0"]  # caught up
    for connection in ("meshlog-api", "meshlog-projector", "meshlog-gateway"):
        assert _row(out, endpoint, connection)[2] == "yes"
    api = out.strip().splitlines()[-1].split()  # the API table comes last
    assert api[0] == endpoint and int(api[1]) >= 1  # requests: top's own scrapes at least


def test_the_endpoint_comes_from_the_data_dirs_up_json(cp: ControlPlane) -> None:
    result = _top("--data-dir", str(cp.data_dir))
    assert result.returncode == 0, result.stderr
    assert cp.where["api"] + "/metrics" in result.stdout


def test_an_endpoint_that_is_down_is_named_in_one_line(cp: ControlPlane) -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    result = _top("--metrics", cp.where["api"] + "/metrics", "--metrics", url)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"error: cannot scrape {url}: "), result.stderr


def test_ctrl_c_ends_the_live_view_quietly(cp: ControlPlane) -> None:
    proc = popen([str(VENV_BIN / "meshlog"), "top", "--api", cp.where["api"], "--interval",
                  "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 start_new_session=True)
    try:
        before, polls = _requests(cp), [0]

        def looping() -> bool:
            # the k-th poll reads `before` plus k of our own requests plus top's scrapes;
            # three of top's: its first and two of the loop's
            polls[0] += 1
            return _requests(cp) - before - polls[0] >= 3

        wait_for(looping, what="top to scrape in a loop")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert err == b""
    assert b"projector" in out


def _requests(cp: ControlPlane) -> float:
    """GET /metrics requests answered so far (this one is counted once answered)."""
    text = cp.api.get("/metrics").text
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
               if line.startswith('meshlog_api_requests_total{method="GET",route="/metrics"'))
