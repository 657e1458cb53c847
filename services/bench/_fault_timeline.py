"""Where the stall of `meshlog bench faults` goes: what lived on the node that was killed,
and when each step of the way back happened, in seconds after the SIGKILL.

- `Placement` (read just before the kill from every node's monitoring endpoint, `/connz` and
  `/jsz`): which node each process is connected to, which node leads the event stream, each
  bucket and the JetStream meta layer, and which node holds each consumer of the event
  stream (the projector's reader is an R1 consumer: it dies with its node).
- `Timeline` (after the kill): the elections, from the surviving nats-servers' own logs
  ("new stream leader for ...", "metadata leader"); the first event stored after the kill
  (its stream timestamp, `Nats-Time-Stamp`); the projector's first commit of it (the
  read-model store's checkpoint, polled as the API polls it); the API's first
  acknowledgement; and the lines the projector and the API logged meanwhile.

All clocks are this host's: the logs' wall-clock times and the stream's timestamps are put on
the bench's monotonic clock through one pair of readings taken at the kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats.errors
from nats.aio.client import Client as NATS

from events.subjects import EVENTS_STREAM
from projections import open_store
from services.runtime.nats_cluster import NatsCluster

__all__ = ["Placement", "Timeline"]

_POLL_S = 0.02
_NATS_LINE = re.compile(r"^\[\d+\] (\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+) \[\w+\] (.*)$")
_MESHLOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) (\w+) ([\w.]+): (.*)$")
_NEW_LEADER = re.compile(r"new stream leader for '\$G > (\S+)'")
"""What the new leader of a stream's group logs (only the winner does)."""
_NEW_META_LEADER = "Self is new JetStream cluster metadata leader"
_LOG_LINES = 30


class Placement:
    """What each node holds, read from the nodes' monitoring endpoints."""

    def __init__(self) -> None:
        self.connections: dict[str, str] = {}
        """Connection name (`meshlog-api`, ...) -> node."""
        self.leaders: dict[str, str] = {}
        """Stream (or `meta`) -> its leader."""
        self.consumers: list[tuple[str, str]] = []
        """(node, what) for each consumer of the event stream."""
        self.unread: list[str] = []
        """Nodes whose monitoring endpoint did not answer, and why."""

    @classmethod
    async def read(cls, cluster: NatsCluster, nc: NATS) -> Placement:
        placement = cls()
        async with httpx.AsyncClient(timeout=5) as client:
            for node in cluster.nodes:
                base = f"http://127.0.0.1:{node.monitor_port}"
                try:
                    connz = (await client.get(f"{base}/connz?limit=1024")).json()
                    jsz = (await client.get(f"{base}/jsz?streams=true")).json()
                except (httpx.HTTPError, ValueError) as exc:
                    placement.unread.append(f"{node.name}: {exc!r}")
                    continue
                for conn in connz.get("connections") or []:
                    if conn.get("name"):
                        placement.connections[conn["name"]] = node.name
                placement._add_leaders(jsz)
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            for consumer in await nc.jetstream(timeout=5).consumers_info(EVENTS_STREAM):
                config = consumer.config
                kind = "durable" if config.durable_name else "ephemeral"
                policy = str(getattr(config.deliver_policy, "value", config.deliver_policy))
                placement.consumers.append((
                    consumer.cluster.leader if consumer.cluster and consumer.cluster.leader
                    else "?", f"{kind} consumer {policy}"))
        return placement

    def _add_leaders(self, jsz: dict[str, Any]) -> None:
        meta = (jsz.get("meta_cluster") or {}).get("leader")
        if meta:
            self.leaders["meta"] = meta
        for account in jsz.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                leader = (stream.get("cluster") or {}).get("leader")
                if leader:
                    self.leaders[stream["name"]] = leader

    def on(self, node: str) -> list[str]:
        """What lived on `node`."""
        held = [f"{name} connection" for name, at in sorted(self.connections.items())
                if at == node and name.startswith("meshlog-")]
        held += [f"{stream} leader" for stream, at in sorted(self.leaders.items()) if at == node]
        held += [what for at, what in self.consumers if at == node]
        return held


class Timeline:
    """Clocks read at the kill (made just before it), and the store's checkpoint polled
    from then on."""

    def __init__(self, work: Path, cluster: NatsCluster, last_seq: int) -> None:
        self._work = work
        self._cluster = cluster
        self.last_seq = last_seq
        """The stream's last sequence just before the kill."""
        self.killed_at = time.monotonic()
        self._wall_offset = time.time() - self.killed_at
        self.commits: list[tuple[float, int]] = []
        """(when, checkpoint) each time the store's checkpoint moved."""

    def since_kill(self, wall: float) -> float:
        return round(wall - self._wall_offset - self.killed_at, 2)

    async def poll_commits(self, database: Path) -> None:
        """Until cancelled: the read-model store's checkpoint, as the API reads it."""
        store = await open_store(f"sqlite:///{database}")
        try:
            seen = -1
            while True:
                checkpoint = await store.checkpoint()
                if checkpoint != seen:
                    seen = checkpoint
                    self.commits.append((time.monotonic(), checkpoint))
                await asyncio.sleep(_POLL_S)
        finally:
            await store.close()

    async def first_stored(self, nc: NATS) -> tuple[int, float] | None:
        """The first event the stream stored after the kill: (sequence, its wall time)."""
        js = nc.jetstream(timeout=2)
        kill_wall = self.killed_at + self._wall_offset
        for seq in range(self.last_seq + 1, self.last_seq + 200):
            try:
                msg = await js.get_msg(EVENTS_STREAM, seq=seq, direct=True)
            except (nats.errors.Error, TimeoutError):
                return None
            if msg.time is not None and msg.time.timestamp() > kill_wall:
                return seq, msg.time.timestamp()
        return None

    async def figures(self, nc: NATS, acked: list[float]) -> dict[str, Any]:
        """`acked`: when the API acknowledged each write (monotonic)."""
        steps: dict[str, float | None] = dict(self._elections())
        stored = await self.first_stored(nc)
        steps["first_stored"] = self.since_kill(stored[1]) if stored else None
        committed = [at for at, seq in self.commits if stored and seq >= stored[0]]
        steps["first_committed"] = round(committed[0] - self.killed_at, 2) if committed \
            else None
        after_stall = [at for at in acked if committed and at >= committed[0]]
        steps["first_acked_after_commit"] = round(min(after_stall) - self.killed_at, 2) \
            if after_stall else None
        return {"after_kill_s": steps, "after_kill_log": self._meshlog_lines()}

    def _elections(self) -> dict[str, float]:
        """The first new leader of each stream (and of the meta layer) after the kill, from
        the nodes' logs (the killed one's too: started again, it may win an election)."""
        found: dict[str, float] = {}
        for node in self._cluster.nodes:
            for wall, text in _lines(node.log_file, _NATS_LINE, "%Y/%m/%d %H:%M:%S.%f"):
                after = self.since_kill(wall)
                if after < 0:
                    continue
                match = _NEW_LEADER.search(text)
                what = f"{match.group(1)}_leader" if match else (
                    "meta_leader" if _NEW_META_LEADER in text else None)
                if what and (what not in found or after < found[what]):
                    found[what] = after
        return found

    def _meshlog_lines(self) -> list[str]:
        """The projector's and the API's log lines from the kill on (the first few)."""
        lines: list[tuple[float, str]] = []
        for path in (self._work / "projector.log", self._work / "api.log"):
            for wall, text in _lines(path, _MESHLOG_LINE, "%Y-%m-%d %H:%M:%S,%f"):
                after = self.since_kill(wall)
                if after >= -0.01:
                    lines.append((after, f"{after:.2f} {path.stem}: {text[:160]}"))
        return [text for _, text in sorted(lines)[:_LOG_LINES]]


def _lines(path: Path, pattern: re.Pattern[str], fmt: str) -> list[tuple[float, str]]:
    """(wall time, text) of each line of `path` that `pattern` reads."""
    out = []
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            match = pattern.match(line)
            if match:
                stamp = match.group(1)
                out.append((datetime.strptime(stamp, fmt).timestamp(),
                            " ".join(match.groups()[1:])))
    return out
