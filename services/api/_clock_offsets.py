"""How far each zone's clock is from global's, from the gateway heartbeats synced to global.

A zone's proxy is connected while its gateway was heard of within the stale time
(services.api._zone_insights.verdict): its heartbeat and connect times are stamped by the
zone's clock, so judging them against global's clock calls a zone whose clock is
more than the stale time behind global's not connected, and keeps a zone ahead of it
connected that much longer after its gateways die. Taking the zone's "now" from its newest
heartbeat would not do: a zone whose gateways all stopped would have that "now" stop with them
and its proxies connected for ever.

Each heartbeat carries two times: `beat_at`, its gateway's clock when it wrote it, and the
time global's nats-server stored its synced copy (the KV entry's timestamp: a sourced message
is stamped when the sourcing stream stores it, by its server's clock). Their difference

    d = stored (global's clock) - beat_at (the zone's clock) = offset + delay

is the clock offset plus the heartbeat's way there (the zone's write, the source's delivery
over the leafnode): the delay is never negative, small on a healthy link, large for a
heartbeat that waited out a cut link or that a new source copied long after it was written (a
dead gateway's last one). So the zone's offset is the smallest `d` of its heartbeats seen in
the last `WINDOW_MS` of stored time (the one that travelled fastest): the offset plus the
smallest delay seen, never less than the offset. The zone's "now" is global's clock minus it:
it keeps running when the gateways stop (the last offset is kept), so their heartbeats age
and their proxies go, as in the zone; it is behind the zone's true time by that smallest delay,
so a dead gateway's proxies are called connected that much longer (milliseconds on a healthy
link). Were every sample late (a zone heard of only through a dead gateway's old heartbeat),
the heartbeat is judged by when it reached global: its proxies go a stale time later.

Per zone, as the zone judges its proxies with one clock (its API's, its reaper's): the
smallest `d` of all its gateways, so a live gateway's heartbeat corrects a dead one's that
came late. Gateways of one zone on hosts of different clocks are judged against the one
furthest ahead, as the zone's own API does against its own clock.

A zone's clock stepped back (d grows) keeps the old, smaller offset until its samples leave
the window: its proxies may be called not connected for up to `WINDOW_MS`; a clock stepped
forward (d shrinks) is taken at once. The samples are the heartbeats each snapshot of the
bucket shows (one per gateway per read, a heartbeat seen again not counted twice, no read
more: a heartbeat the scan's watcher missed and read alone is stamped from that read's
answer), at most `MAX_SAMPLES` per zone, forgotten with the zone's heartbeats.

A zone has no offset until global holds one of its heartbeats: a proxy's insight can reach
global first (the source copies in the zone's stream order, and a heartbeat rewritten after
the insight comes after it, within the copy), then the insight is judged by global's clock
(offset 0) and shows no `clockOffsetSeconds` until the next scan that sees the heartbeat.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from events.bus.insights import BeatStamps, InsightsSnapshot

__all__ = ["MAX_SAMPLES", "WINDOW_MS", "ClockOffsets", "Offsets"]

WINDOW_MS = 300_000
"""How far back (in stored time, from a zone's newest sample) its samples count."""
MAX_SAMPLES = 1024
"""Per zone: a bound on memory whatever the reads' rate and the gateways' number."""

Offsets = dict[str, int]
"""Global's clock minus each zone's, link delay included (ms), by zone."""


class _Zone:
    def __init__(self, max_samples: int) -> None:
        self.samples: deque[tuple[int, int]] = deque(maxlen=max_samples)
        """(stored, d) of the zone's heartbeats, in the order read."""
        self.last: dict[str, int] = {}
        """`beat_at` of each gateway's last heartbeat sampled."""


class ClockOffsets:
    """The samples of each zone's clock offset, fed by each snapshot of global's copy of the
    zones' insights. Fed from one read at a time (its TtlCache's)."""

    def __init__(self, *, window_ms: int = WINDOW_MS, max_samples: int = MAX_SAMPLES) -> None:
        self._window_ms = window_ms
        self._max_samples = max_samples
        self._zones: dict[str, _Zone] = {}

    def observe(self, zones: Mapping[str, InsightsSnapshot], stamps: BeatStamps) -> Offsets:
        """Take the heartbeats of one snapshot (`stamps`: when each was stored) and return
        each zone's offset now (none for a zone never sampled)."""
        for zone, (_, beats) in zones.items():
            state = self._zones.get(zone)
            for instance, beat in beats.items():
                stored = stamps.get((zone, instance))
                if stored is None:
                    continue  # a read that did not say when it was stored: no sample
                if state is None:
                    state = self._zones[zone] = _Zone(self._max_samples)
                if state.last.get(instance) == beat.beat_at:
                    continue  # the heartbeat an earlier read sampled
                state.last[instance] = beat.beat_at
                state.samples.append((stored, stored - beat.beat_at))
            if state is None:
                continue
            for gone in state.last.keys() - beats.keys():
                del state.last[gone]
            newest = max(stored for stored, _ in state.samples)
            while state.samples[0][0] < newest - self._window_ms:
                state.samples.popleft()  # never the newest: it is within the window
        for gone in self._zones.keys() - zones.keys():
            del self._zones[gone]  # none of its heartbeats is in the bucket any more
        return {zone: min(d for _, d in state.samples)
                for zone, state in self._zones.items() if state.samples}
