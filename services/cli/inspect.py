"""`meshlog inspect dataplane NAME`: a proxy's insight, or its computed config, for people.

    meshlog inspect dataplane web-1                 connected?, gateway, since, xDS counters
    meshlog inspect dataplane web-1 --config        the listeners, clusters, endpoints it gets
    meshlog inspect dataplane web-1 -o yaml|json    the API document itself
    meshlog inspect zoneingress west-ingress        the same of a zone ingress's Envoy

On global, a zone's Dataplane (its synced name) shows its zone's insight, with its zone and
how old global's copy of it is (`syncedFrom`).

Reads `GET .../dataplanes/{name}/_overview` and `.../_config` (services.api.proxy_inspector),
and `GET /zoneingresses+insights/{name}` (services.api.meshless).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

import yaml

from services.cli._tables import print_table, table_lines
from services.cli.client import ApiClient
from services.cli.zones import ZONE_WORDS, cmd_inspect_zone

if TYPE_CHECKING:  # rich is imported only when a table is drawn (start-up time)
    from rich.table import Table

__all__ = ["cmd_inspect", "config_table", "overview_lines"]

_KINDS = {"dataplane", "dataplanes", "dp"}
_INGRESS_KINDS = {"zoneingress", "zoneingresses", "zone-ingress", "zone-ingresses", "zi"}
_TYPES = ("cds", "eds", "lds", "rds", "sds")


def cmd_inspect(args: argparse.Namespace, client: ApiClient) -> int:
    if args.kind.lower() in ZONE_WORDS:
        return cmd_inspect_zone(args, client)
    ingress = args.kind.lower() in _INGRESS_KINDS
    if args.kind.lower() not in _KINDS and not ingress:
        raise SystemExit("error: meshlog inspect knows dataplane, zoneingress and zone only "
                         f"(got {args.kind!r})")
    if ingress and args.config:
        raise SystemExit("error: --config is for a dataplane: a zone ingress's config is "
                         "not served by the API yet")
    base = f"/meshes/{args.mesh}/dataplanes/{args.name}"
    doc = client.get(f"/zoneingresses+insights/{args.name}" if ingress
                     else f"{base}/_config" if args.config else f"{base}/_overview")
    output = args.output or "table"
    if output == "json":
        print(json.dumps(doc, indent=2))
    elif output == "yaml":
        print(yaml.safe_dump(doc, sort_keys=False), end="")
    elif args.config:
        print_table(config_table(doc))
    else:
        for line in overview_lines(doc):
            print(line)
    return 0


def overview_lines(doc: dict[str, Any]) -> list[str]:
    """The `_overview` document (or a ZoneIngressOverview) as text: facts first, then a
    per-type xDS table."""
    if doc.get("type") == "ZoneIngressOverview":
        networking = doc["zoneIngress"]["networking"]
        insight = doc.get("zoneIngressInsight") or {}
        facts = [("ZONE INGRESS", doc["name"]),
                 ("ZONE", doc["zoneIngress"].get("zone", "")),
                 ("ADDRESS", f"{networking['address']}:{networking['port']}"),
                 ("ADVERTISED", f"{networking['advertisedAddress']}:"
                                f"{networking['advertisedPort']}"
                  if "advertisedAddress" in networking and "advertisedPort" in networking
                  else "none (other zones do not use it)")]
    else:
        insight = doc.get("dataplaneInsight") or {}
        facts = [("DATAPLANE", f"{doc['mesh']}/{doc['name']}"),
                 ("ADDRESS", doc["dataplane"]["networking"]["address"])]
    synced = insight.get("syncedFrom")
    if synced:
        facts.append(("ZONE", f"{synced['zone']} (as {synced['name']})"))
        age = ("never heard from" if synced.get("asOf") is None
               else f"as of {synced['asOf']} ({synced['ageSeconds']:g} s ago)")
        facts.append(("SYNCED", age if synced.get("current")
                      else f"{age}, last known: the link to the zone is down or slow"))
        offset = synced.get("clockOffsetSeconds")
        if offset is not None:  # global's clock minus the zone's, the link's delay in it
            side = "behind" if offset >= 0 else "ahead of"
            facts.append(("ZONE CLOCK",
                          f"{abs(offset):g} s {side} global's (link delay included)"))
    subs = insight.get("subscriptions") or []
    if "unavailable" in insight:
        facts.append(("CONNECTED", f"unknown ({insight['unavailable']})"))
    elif not subs:
        facts.append(("CONNECTED", "no (never connected)"))
    else:
        sub = subs[-1]
        facts += [("CONNECTED", "yes" if insight.get("connected") else "no"),
                  ("GATEWAY", sub["controlPlaneInstanceId"]),
                  ("CONNECTED SINCE", sub["connectTime"])]
        if "disconnectTime" in sub:
            facts.append(("DISCONNECTED AT", sub["disconnectTime"]))
        facts.append(("PROTOCOL", sub.get("protocol", "")))
        if sub.get("userAgent"):
            facts.append(("USER AGENT", sub["userAgent"]))
    mtls = insight.get("mTLS")
    if mtls:
        facts += [("MTLS", f"{mtls['mode']}, certificate from {mtls['issuedBackend']}"),
                  ("CERTIFICATE", f"issued {mtls['lastCertificateRegeneration']}, expires "
                                  f"{mtls['certificateExpirationTime']}"),
                  ("IDENTITIES", ", ".join(mtls["identities"]))]
    width = max(len(k) for k, _ in facts) + 2
    lines = [f"{key:<{width}}{value}" for key, value in facts]
    if subs:
        lines += ["", *table_lines(_types_table(subs[-1]["status"]))]
    return lines


def _types_table(status: dict[str, Any]) -> Table:
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("TYPE", "SENT", "ACKED", "NACKED", "LAST ACKED VERSION", "LAST NACK"):
        table.add_column(column)
    names = [t for t in _TYPES if t in status]
    names += sorted(t for t in status if t not in _TYPES and t != "total")
    for name in [*names, "total"]:
        stats = status.get(name, {})
        table.add_row(name, str(stats.get("responsesSent", 0)),
                      str(stats.get("responsesAcknowledged", 0)),
                      str(stats.get("responsesRejected", 0)),
                      stats.get("lastAckedVersion", "-") if name != "total" else "",
                      stats.get("lastNackMessage", "-") if name != "total" else "")
    return table


def config_table(doc: dict[str, Any]) -> Table:
    """The `_config` document as one row per resource: type, name, version."""
    from rich.table import Table

    table = Table(box=None, header_style="bold",
                  title=f"{doc['mesh']}/{doc['name']} at sequence {doc['projectedSequence']}",
                  title_justify="left")
    for column in ("TYPE", "NAME", "VERSION"):
        table.add_column(column)
    for section, entries in doc["xds"].items():
        for entry in entries:
            table.add_row(section, entry["name"], entry["version"])
    return table
