"""`meshlog replay` and `meshlog export`: rebuild read models from the log, dump them canonically.

Both run beside a live control plane: replay reads the log through its own NATS connection and
writes only into the fresh store it is given, so the live read models keep serving.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from events import JetStreamEventLog, connect_nats
from projections import Progress, ReadModelStore, export_store, open_store, rebuild
from services.errors import ConfigError

__all__ = ["nats_url_of", "run_export", "run_replay"]


class _UpReport(msgspec.Struct, frozen=True):
    """What `meshlog up` writes to `<data-dir>/up.json` (services.runtime.up); the rest unread."""

    nats: str


_UP_REPORT = msgspec.json.Decoder(_UpReport)


def nats_url_of(nats_url: str | None, data_dir: Path) -> str:
    """--nats-url, else the URL a `meshlog up` on `data_dir` reported."""
    if nats_url:
        return nats_url
    up = data_dir / "up.json"
    if not up.exists():
        raise ConfigError(f"no --nats-url and no running `meshlog up` found ({up} is missing)")
    try:
        return _UP_REPORT.decode(up.read_bytes()).nats
    except msgspec.DecodeError as exc:  # ValidationError too
        raise ConfigError(f"no --nats-url, and {up} names no NATS URL ({exc})") from None


async def run_replay(*, nats_url: str, database: str, zone: str, to_seq: int | None,
                     show_progress: bool = True) -> int:
    nc = await connect_nats(nats_url, name="meshlog-replay")
    try:
        log = await JetStreamEventLog.open(nc)
        store = await open_store(database)
        try:
            if not show_progress:
                return await rebuild(log, store, zone=zone, to_seq=to_seq)
            return await _with_progress_bar(log, store, zone, to_seq)
        finally:
            await store.close()
    finally:
        await nc.close()


async def _with_progress_bar(log: JetStreamEventLog, store: ReadModelStore, zone: str,
                             to_seq: int | None) -> int:
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

        return await rebuild(log, store, zone=zone, to_seq=to_seq, on_progress=on_progress)


async def run_export(database: str) -> bytes:
    store = await open_store(database)
    try:
        return await export_store(store)
    finally:
        await store.close()
