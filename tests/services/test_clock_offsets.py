"""A zone's clock offset as global estimates it from the synced heartbeats
(services.api._clock_offsets): the smallest difference between when global stored a heartbeat
and its own time, over a window of stored time, per zone; the real multi-zone case is
tests/services/test_zone_clock_skew.py."""

from __future__ import annotations

from events.bus.insights import GatewayHeartbeat, InsightsSnapshot
from services.api._clock_offsets import ClockOffsets

SKEW = 60_000
"""The zone's clock is this far behind global's."""


def _zone(**beats: int) -> InsightsSnapshot:
    return {}, {gw: GatewayHeartbeat(instance=gw, address="-", started_at=0, beat_at=at)
                for gw, at in beats.items()}


def test_the_offset_is_the_smallest_difference_the_link_delay_in_it() -> None:
    offsets = ClockOffsets(window_ms=300_000)
    # a heartbeat that waited 10 s on the way, then one that took 5 ms
    assert offsets.observe({"west": _zone(a=1_000)}, {("west", "a"): 1_000 + SKEW + 10_000}
                           ) == {"west": SKEW + 10_000}
    assert offsets.observe({"west": _zone(a=6_000)}, {("west", "a"): 6_000 + SKEW + 5}
                           ) == {"west": SKEW + 5}
    # a later, slower one does not raise it; the same heartbeat read again adds nothing
    assert offsets.observe({"west": _zone(a=11_000)}, {("west", "a"): 11_000 + SKEW + 900}
                           ) == {"west": SKEW + 5}


def test_a_live_gateway_corrects_a_dead_ones_late_heartbeat() -> None:
    """A dead gateway's last heartbeat copied to global long after it was written (a new
    source) says nothing of the clock; the zone's live gateway does."""
    offsets = ClockOffsets()
    now = 1_000_000
    got = offsets.observe({"west": _zone(dead=now - SKEW - 700_000, live=now - SKEW - 3)},
                          {("west", "dead"): now, ("west", "live"): now})
    assert got == {"west": SKEW + 3}


def test_the_offset_stays_when_the_gateways_stop_and_follows_a_clock_stepped() -> None:
    offsets = ClockOffsets(window_ms=300_000)
    offsets.observe({"west": _zone(a=0)}, {("west", "a"): SKEW + 2})
    # no new heartbeat (the gateway stopped): the offset is kept, so the zone's now runs on
    assert offsets.observe({"west": _zone(a=0)}, {("west", "a"): SKEW + 2}) == {"west": SKEW + 2}
    # its heartbeat forgotten by the zone's reaper: still kept while the zone is in the bucket
    assert offsets.observe({"west": _zone()}, {}) == {"west": SKEW + 2}
    # the zone's clock stepped forward by 50 s: taken at once
    assert offsets.observe({"west": _zone(b=100_000)}, {("west", "b"): 100_000 + SKEW - 50_000}
                           ) == {"west": SKEW - 50_000}
    # stepped back again: the smaller offset stays until it leaves the window
    assert offsets.observe({"west": _zone(b=200_000)}, {("west", "b"): 200_000 + SKEW}
                           ) == {"west": SKEW - 50_000}
    assert offsets.observe({"west": _zone(b=500_000)}, {("west", "b"): 500_000 + SKEW}
                           ) == {"west": SKEW}


def test_zones_apart_and_a_zone_gone_forgotten() -> None:
    offsets = ClockOffsets()
    got = offsets.observe({"west": _zone(a=0), "east": _zone(e=0)},
                          {("west", "a"): SKEW, ("east", "e"): -SKEW})
    assert got == {"west": SKEW, "east": -SKEW}  # east's clock ahead of global's
    assert offsets.observe({"east": _zone(e=0)}, {("east", "e"): -SKEW}) == {"east": -SKEW}
    # a heartbeat whose stored time is not known (read alone) is no sample
    assert offsets.observe({"west": _zone(a=5)}, {}) == {}
