"""A ZoneInsight's sync lag: nats-server's source `lag` stays 0 during a cut (reference
multizone.md §4), so the insight reports the lag in events only while the source hears from
its upstream, and null (with a reason) otherwise; `seconds` is always the time since it was
last heard."""

from __future__ import annotations

from events.bus.sources import SourceState, zone_filter
from services.api.zones import zone_insight

NOW = 1_800_000_000_000


def _source(active_ms: int | None, lag: int = 0, error: str | None = None) -> SourceState:
    return SourceState(zone_filter("east"), "$JS.east.API", lag, active_ms, error)


def test_a_live_source_reports_its_lag_in_events_and_seconds() -> None:
    doc = zone_insight("east", [_source(400, lag=7)], NOW)
    assert doc["connected"] is True
    assert doc["syncLag"] == {"events": 7, "seconds": 0.4}
    assert "reason" not in doc


def test_a_cut_link_reports_the_events_lag_as_unknown_not_zero() -> None:
    early = zone_insight("east", [_source(4_000)], NOW)  # within the connected threshold
    late = zone_insight("east", [_source(31_000)], NOW)
    for doc in (early, late):
        assert doc["syncLag"]["events"] is None
        assert "cannot be known" in doc["reason"]
    assert early["connected"] is True and late["connected"] is False
    assert (early["syncLag"]["seconds"], late["syncLag"]["seconds"]) == (4.0, 31.0)


def test_a_source_in_error_or_never_heard_has_no_events_lag() -> None:
    failed = zone_insight("east", [_source(200, lag=3, error="no responders")], NOW)
    assert failed["connected"] is False and failed["syncLag"]["events"] is None
    assert failed["error"] == "no responders"
    never = zone_insight("east", [_source(None)], NOW)
    assert never["connected"] is False and never["syncLag"] == {"events": None, "seconds": None}
    assert never["lastSeen"] is None


def test_the_cli_shows_an_unknown_events_lag_as_unknown() -> None:
    from services.cli.zones import _events

    assert _events({"events": None, "seconds": 31.0}) == "unknown"
    assert _events({"events": 0, "seconds": 0.2}) == "0"
    assert _events({}) == "-"
