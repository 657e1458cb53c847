"""`meshlog replay` and `meshlog export`: rebuild read models from the log, dump them canonically.

Both run beside a live control plane: replay reads the log through its own NATS connection and
writes only into the fresh store it is given, so the live read models keep serving.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from events import EventLogUnavailable, JetStreamEventLog, connect_nats
from events.identity import SecretKey
from projections import Progress, ReadModelStore, export_store, open_store, rebuild
from services.errors import ConfigError
from services.runtime.nats_users import admin_credentials
from services.runtime.up_file import judge

__all__ = ["LogAddress", "nats_url_of", "run_export", "run_replay"]

_CONNECT_S = 15.0
"""A bound on the one connection attempt of a command (nats-py's own is 5 s per server)."""


class _UpReport(msgspec.Struct, frozen=True):
    """What `meshlog up` writes to `<data-dir>/up.json` (services.runtime.up_file); the rest
    unread."""

    nats: str
    pid: str = ""
    host: str = ""
    started: str | None = None
    boot_id: str | None = None
    pid_namespace: str | None = None


_UP_REPORT = msgspec.json.Decoder(_UpReport)


class LogAddress(msgspec.Struct, frozen=True):
    """The log's NATS, and what to tell a user who cannot reach it."""

    url: str
    unreachable: str
    """`cannot reach NATS at URL (where it came from): what to start`."""
    credentials: Path | None = None


def nats_url_of(nats_url: str | None, data_dir: Path, credentials: Path | None = None
                ) -> LogAddress:
    """--nats-url, else the URL a running `meshlog up` on `data_dir` reported (its up.json: one
    a crash left behind, whose process is gone, is no running `meshlog up`; one written by an
    older release does not say, so its URL may name a NATS that is gone). Credentials: --nats-creds,
    else the admin user's seed of that `meshlog up` if it made one (its embedded nats-server
    has a user per role, services.runtime.nats_users), else none."""
    credentials = credentials or admin_credentials(data_dir)
    if nats_url:
        return LogAddress(nats_url, f"cannot reach NATS at {nats_url} (--nats-url): is it "
                                    "running?", credentials)
    up = data_dir / "up.json"
    if not up.exists():
        raise ConfigError(f"no --nats-url and no running `meshlog up` found ({up} is missing)")
    try:
        report = _UP_REPORT.decode(up.read_bytes())
    except msgspec.DecodeError as exc:  # ValidationError too
        raise ConfigError(f"no --nats-url, and {up} names no NATS URL ({exc})") from None
    writer = judge(msgspec.structs.asdict(report))
    if writer.state == "gone":
        raise ConfigError(f"no --nats-url and no running `meshlog up` found ({up} was left "
                          f"by a crash: {writer.why})")
    url = report.nats
    return LogAddress(url, f"cannot reach NATS at {url} (from {up}): is `meshlog up "
                           f"--data-dir {data_dir}` running? or pass --nats-url", credentials)


async def run_replay(*, nats: LogAddress, database: str, zone: str, to_seq: int | None,
                     show_progress: bool = True, secret_key: SecretKey | None = None) -> int:
    """Rebuild into `database` from the log at `nats`; the target sequence. Fails fast, with
    `nats.unreachable`, when the NATS is not there; refuses a `to_seq` past the log's end
    (SystemExit) before it opens the store."""
    try:
        async with asyncio.timeout(_CONNECT_S):
            nc = await connect_nats(nats.url, name="meshlog-replay", reconnect=False,
                                    credentials=nats.credentials)
    except (TimeoutError, EventLogUnavailable):
        raise EventLogUnavailable(nats.unreachable) from None
    try:
        log = await JetStreamEventLog.open(nc)
        head = await log.last_seq()
        if to_seq is not None and to_seq > head:
            raise SystemExit(f"error: --to-seq {to_seq} is beyond the end of the log: its last "
                             f"sequence is {head}")
        store = await open_store(database)
        try:
            if not show_progress:
                return await rebuild(log, store, zone=zone, to_seq=to_seq,
                                     secret_key=secret_key)
            return await _with_progress_bar(log, store, zone, to_seq, secret_key)
        finally:
            await store.close()
    finally:
        await nc.close()


async def _with_progress_bar(log: JetStreamEventLog, store: ReadModelStore, zone: str,
                             to_seq: int | None, secret_key: SecretKey | None) -> int:
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    columns = [TextColumn("replay"), BarColumn(),
               TextColumn("seq {task.completed:,.0f}/{task.fields[target]:,}"),
               TextColumn("{task.fields[rate]:,.0f} events/s"), TextColumn("ETA"),
               TimeRemainingColumn()]
    with Bar(*columns, transient=False) as bar:
        task = bar.add_task("replay", total=None, target=0, rate=0.0)

        def on_progress(p: Progress) -> None:
            bar.update(task, completed=p.position, total=p.target, target=p.target,
                       rate=p.events_per_s)

        return await rebuild(log, store, zone=zone, to_seq=to_seq, on_progress=on_progress,
                             secret_key=secret_key)


async def run_export(database: str) -> bytes:
    store = await open_store(database)
    try:
        return await export_store(store)
    finally:
        await store.close()
