"""Simulated proxies for `meshlog bench propagation`: one worker process, many ADS streams.

    python -m services.bench._proxies --xds HOST:PORT --first I --count N [--tokens FILE]

Each stream behaves like an Envoy on State of the World ADS: CDS and LDS wildcard with the
node on the first request, EDS for every EDS cluster it was sent, and an ACK for every
response; with `--tokens` (a JSON object of node id to dataplane token) each stream sends its
proxy's token in the `authorization` metadata, as Envoy's bootstrap has it. The worker talks
to the benchmark over stdin/stdout, one JSON object per line:

- out `{"ready": n}` once every stream has ACKed CDS, EDS and LDS;
- in `{"round": r, "marker": hex, "present": bool}` arms a round: the change is the endpoint
  address whose protobuf field encoding is `marker`, expected in (or gone from) EDS;
  out `{"armed": r}`;
- out `{"done": r, "max_t": t}` once every stream has ACKed an EDS response showing the
  change; `t` is the latest `time.time()` among them (same host as the benchmark).

With `--sds` (`meshlog bench rotation`) each stream also subscribes, as Envoy does in a mesh
with mTLS, to the secrets its clusters and listeners name (`identity_cert:secret:<mesh>`,
`mesh_ca:secret:<mesh>`), and a round (`{"round": r, "secret": true}`) is done for a stream
once it has ACKed an SDS response whose identity certificate differs from the one it held
when the round was armed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import msgspec
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse

from xds_gateway.type_urls import CLUSTER, ENDPOINT, LISTENER, SECRET

__all__ = ["main"]

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
CDS, EDS, LDS, SDS = CLUSTER, ENDPOINT, LISTENER, SECRET
_OPTIONS = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]


class _Arm(msgspec.Struct, frozen=True):
    """The benchmark's command arming a round (see the module docstring)."""

    round: int
    marker: str = ""
    present: bool = True
    secret: bool = False
    """The round waits for a new identity certificate instead of an endpoint."""


_ARM = msgspec.json.Decoder(_Arm)
_TOKENS = msgspec.json.Decoder(dict[str, str])


class Round:
    def __init__(self, number: int, marker: bytes, present: bool, streams: int,
                 secret: bool = False) -> None:
        self.number = number
        self.marker = marker
        self.present = present
        self.secret = secret
        self.waiting = streams
        self.max_t = 0.0
        self.done = asyncio.Event()

    def saw(self, t: float) -> None:
        """One more stream has ACKed an EDS response showing the change."""
        self.max_t = max(self.max_t, t)
        self.waiting -= 1
        if self.waiting == 0:
            self.done.set()


class Worker:
    def __init__(self, xds: str, node_ids: list[str], *, sds: bool = False,
                 mesh: str = "default", tokens: dict[str, str] | None = None) -> None:
        self.xds = xds
        self.node_ids = node_ids
        self.sds = sds
        self.secret_names = [f"identity_cert:secret:{mesh}", f"mesh_ca:secret:{mesh}"]
        self.tokens = tokens or {}
        self.unready = len(node_ids)
        self.all_ready = asyncio.Event()
        self.round: Round | None = None

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            proxies = [tg.create_task(self._proxy(node_id)) for node_id in self.node_ids]
            await self.all_ready.wait()
            _say({"ready": len(self.node_ids)})
            await self._commands()  # until the benchmark closes stdin
            for task in proxies:
                task.cancel()

    async def _commands(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            command = _ARM.decode(line)
            self.round = Round(command.round, bytes.fromhex(command.marker), command.present,
                               len(self.node_ids), command.secret)
            _say({"armed": command.round})
            await self.round.done.wait()
            _say({"done": self.round.number, "max_t": self.round.max_t})

    async def _proxy(self, node_id: str) -> None:
        delay = 0.1
        while True:  # reconnect like Envoy if the stream ends (a gateway drained or died)
            async with grpc.aio.insecure_channel(self.xds, options=_OPTIONS) as channel:
                try:
                    await self._stream(channel, node_id)
                except grpc.aio.AioRpcError as exc:
                    print(f"{node_id}: stream ended: {exc.code()}", file=sys.stderr)
            await asyncio.sleep(delay)  # back-off before reconnecting, as Envoy does
            delay = min(delay * 2, 5.0)

    async def _stream(self, channel: grpc.aio.Channel, node_id: str) -> None:
        queue: asyncio.Queue[DiscoveryRequest] = asyncio.Queue()

        async def requests() -> AsyncIterator[DiscoveryRequest]:
            while True:
                yield await queue.get()

        first = DiscoveryRequest(type_url=CDS)
        first.node.id = node_id
        first.node.user_agent_name = "envoy"
        queue.put_nowait(first)
        queue.put_nowait(DiscoveryRequest(type_url=LDS))
        if self.sds:
            queue.put_nowait(DiscoveryRequest(type_url=SDS, resource_names=self.secret_names))
        # no response deserializer: the raw bytes, searched for the round's marker
        token = self.tokens.get(node_id)
        call: grpc.aio.StreamStreamCall[DiscoveryRequest, bytes] = channel.stream_stream(
            ADS, request_serializer=DiscoveryRequest.SerializeToString,
            response_deserializer=None)(requests(), metadata=(
                (("authorization", token),) if token is not None else None))
        eds_names: list[str] = []
        acked: set[str] = set()
        ready = False
        counted = -1  # the last round this stream counted in
        identity = b""  # the identity secret last ACKed (--sds)
        armed_with: tuple[int, bytes] = (-1, b"")  # (round, identity held when it was armed)
        async for raw in call:
            response = DiscoveryResponse.FromString(raw)
            type_url = response.type_url
            names = (eds_names if type_url == EDS
                     else self.secret_names if type_url == SDS else [])
            if type_url == CDS:
                clusters = [Cluster.FromString(r.value) for r in response.resources]
                wanted = sorted(c.name for c in clusters if c.type == Cluster.EDS)
                if wanted != eds_names:
                    eds_names = wanted
                    queue.put_nowait(DiscoveryRequest(type_url=EDS, resource_names=eds_names))
            queue.put_nowait(DiscoveryRequest(
                type_url=type_url, version_info=response.version_info,
                response_nonce=response.nonce, resource_names=names))
            acked.add(type_url)
            current = self.round
            if current is not None and current.secret and armed_with[0] != current.number:
                armed_with = (current.number, identity)
            if type_url == SDS:
                identity = next((r.value for r in response.resources
                                 if self.secret_names[0].encode() in r.value), identity)
            if current is not None and counted != current.number:
                if current.secret:
                    if type_url == SDS and identity != armed_with[1]:
                        counted = current.number
                        current.saw(time.time())
                elif type_url == EDS and (current.marker in raw) == current.present:
                    counted = current.number
                    current.saw(time.time())
            wanted_types = {CDS, EDS, LDS, SDS} if self.sds else {CDS, EDS, LDS}
            if not ready and wanted_types <= acked and (not self.sds or identity):
                ready = True
                self.unready -= 1
                if self.unready == 0:
                    self.all_ready.set()


def _say(message: dict[str, float]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m services.bench._proxies")
    p.add_argument("--xds", required=True, help="HOST:PORT of the gateway or load balancer")
    p.add_argument("--first", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--mesh", default="default")
    p.add_argument("--sds", action="store_true", help="subscribe to the mesh's secrets too")
    p.add_argument("--tokens", help="a JSON file of node id -> dataplane token")
    args = p.parse_args()
    node_ids = [f"{args.mesh}.dp-{i}" for i in range(args.first, args.first + args.count)]
    tokens = _TOKENS.decode(Path(args.tokens).read_bytes()) if args.tokens else None
    asyncio.run(Worker(args.xds, node_ids, sds=args.sds, mesh=args.mesh, tokens=tokens).run())


if __name__ == "__main__":
    main()
