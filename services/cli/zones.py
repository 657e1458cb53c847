"""`meshlog get zones` and `meshlog inspect zone NAME`: the zones of a multi-zone deployment
and how their sync is doing (services.api.zones)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

import yaml

from services.cli._age import age
from services.cli._tables import print_table
from services.cli.client import ApiClient, ApiError

__all__ = ["ZONE_WORDS", "apply_zone", "cmd_get_zones", "cmd_inspect_zone"]

ZONE_WORDS = {"zone", "zones"}


def _show(doc: Any, output: str) -> bool:
    if output == "json":
        print(json.dumps(doc, indent=2))
    elif output == "yaml":
        print(yaml.safe_dump(doc, sort_keys=False), end="")
    else:
        return False
    return True


def cmd_get_zones(args: argparse.Namespace, client: ApiClient) -> int:
    if args.name is not None:
        doc = client.get(f"/zones/{args.name}/_overview")
        if not _show(doc, args.output or "yaml"):
            _table([doc])
        return 0
    zones = client.get("/zones")["items"]
    insights = {i["name"]: i for i in client.get("/zone-insights")["items"]}
    overviews = [{"type": "ZoneOverview", "name": z["name"], "creationTime": z["creationTime"],
                  "zone": {"enabled": z["enabled"]}, "zoneInsight": insights.get(z["name"], {})}
                 for z in zones]
    if not _show({"total": len(overviews), "items": overviews, "next": None},
                 args.output or "table"):
        _table(overviews)
    return 0


def _table(overviews: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("NAME", "ENABLED", "CONNECTED", "LAST SEEN", "LAG (EVENTS)", "LAG (S)",
                   "AGE"):
        table.add_column(column)
    now = datetime.now(UTC)
    for doc in overviews:
        insight = doc.get("zoneInsight") or {}
        lag = insight.get("syncLag") or {}
        enabled = "yes" if doc["zone"]["enabled"] else "no"
        if "installed afresh" in str(insight.get("reason", "")):
            enabled = "refused"  # a new install (meshlog inspect zone NAME says why)
        table.add_row(doc["name"], enabled,
                      "yes" if insight.get("connected") else "no",
                      insight.get("lastSeen") or "-", _events(lag),
                      str(lag.get("seconds", "-")), age(doc.get("creationTime"), now))
    print_table(table)


def _events(lag: dict[str, Any]) -> str:
    """The lag in events; `unknown` when the insight cannot know it (a cut link)."""
    if "events" not in lag:
        return "-"
    return "unknown" if lag["events"] is None else str(lag["events"])


def cmd_inspect_zone(args: argparse.Namespace, client: ApiClient) -> int:
    doc = client.get(f"/zones/{args.name}/_overview")
    if _show(doc, args.output or "table"):
        return 0
    insight = doc.get("zoneInsight") or {}
    lag = insight.get("syncLag") or {}
    facts = [("ZONE", doc["name"]), ("ENABLED", "yes" if doc["zone"]["enabled"] else "no"),
             ("CONNECTED", "yes" if insight.get("connected") else "no"),
             ("LAST SEEN", insight.get("lastSeen") or "never"),
             ("SYNC LAG", f"{_events(lag)} events, {lag.get('seconds', '-')} s"),
             ("SOURCE", " ".join((insight.get("source") or {}).values()) or "-")]
    if "error" in insight:
        facts.append(("ERROR", insight["error"]))
    if "reason" in insight:
        facts.append(("NOTE", insight["reason"]))
    width = max(len(k) for k, _ in facts)
    for key, value in facts:
        print(f"{key:<{width}}  {value}")
    return 0


def apply_zone(client: ApiClient, doc: dict[str, Any]) -> int:
    """`meshlog apply` of a Kuma `Zone` document (`enabled: false` disables it): the number of
    failures (0 or 1)."""
    name, enabled = doc.get("name"), doc.get("enabled", True)
    if not isinstance(name, str) or not isinstance(enabled, bool):
        print(f"error: Zone: 'name' must be a string and 'enabled' true or false (got "
              f"{name!r}, {enabled!r})", file=sys.stderr)
        return 1
    try:
        client.put(f"/zones/{name}", {"enabled": enabled})
    except ApiError as exc:
        print(f"error: Zone {name!r}: {exc}", file=sys.stderr)
        return 1
    print(f"zone {name!r} {'enabled' if enabled else 'disabled'}", flush=True)
    return 0
