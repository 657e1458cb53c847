"""The resource commands of the CLI, as a Kuma user knows them: `apply`, `get` and `delete`,
each a call of the HTTP API through `ApiClient`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from events import POLICY_KINDS, policy_kind
from services.cli._age import age
from services.cli._tables import print_table
from services.cli.client import ApiClient, ApiError
from services.cli.zones import ZONE_WORDS, apply_zone, cmd_get_zones
from services.render import GLOBAL_KINDS, PLURALS

__all__ = ["SINGULAR", "cmd_apply", "cmd_delete", "cmd_get", "dataplane_tags", "read_documents"]


SINGULAR = {"mesh": "Mesh", "dataplane": "Dataplane", "meshservice": "MeshService",
            "hostnamegenerator": "HostnameGenerator",
            **{kind.singular: kind.type_name for kind in POLICY_KINDS},
            "meshmultizoneservice": "MeshMultiZoneService",
            "zoneingress": "ZoneIngress"}
_KIND_PLURAL = {kind: plural for plural, kind in PLURALS.items()}
_SHORT = {"dp": "Dataplane", "ms": "MeshService",
          **{kind.short: kind.type_name for kind in POLICY_KINDS},
          "mmzs": "MeshMultiZoneService", "zi": "ZoneIngress"}


def _kind_of_word(word: str) -> str | None:
    word = word.lower()
    return SINGULAR.get(word) or PLURALS.get(word) or _SHORT.get(word)


def _path(kind: str, mesh: str | None, name: str | None = None) -> str:
    # global kinds at `/<plural>`, as in Kuma; the others under their mesh
    base = "" if kind in GLOBAL_KINDS else f"/meshes/{mesh}"
    return f"{base}/{_KIND_PLURAL[kind]}" + (f"/{name}" if name else "")


# --- commands ---------------------------------------------------------------------------------


def read_documents(path: str) -> list[object]:
    """The YAML/JSON documents of `path` (`-`: stdin), lists and list pages (what `meshlog get
    -o yaml|json` prints for a list) flattened; not validated (a document may be any YAML
    value)."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise SystemExit(f"error: {path} is not valid YAML/JSON: {exc}") from None
    flat: list[object] = []
    for doc in docs:
        flat.extend(doc if isinstance(doc, list) else
                     doc["items"] if _is_page(doc) else [doc])
    return flat


def _is_page(doc: object) -> bool:
    """A list as the API and `meshlog get` give it: `{total, items, next}`, no `type`."""
    return (isinstance(doc, dict) and "type" not in doc and isinstance(doc.get("items"), list)
            and "total" in doc)


def _list_page(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """A whole list in the API's page shape (kumactl prints it so for -o yaml and -o json);
    `next` is null, as every page has been read."""
    return {"total": len(docs), "items": docs, "next": None}


def cmd_apply(args: argparse.Namespace, client: ApiClient) -> int:
    failures = 0
    documents: list[tuple[str, int, object]] = []
    for path in args.file:
        docs = read_documents(path)
        if not docs:  # only `---`, comments or nothing: surely not what was meant
            raise SystemExit(f"error: no resources in {'stdin' if path == '-' else path}")
        documents += [(path, i, doc) for i, doc in enumerate(docs, start=1)]
    for path, i, doc in documents:
        kind = doc.get("type") if isinstance(doc, dict) else None
        if isinstance(doc, dict) and kind == "Zone":  # enable or disable one, on global
            failures += apply_zone(client, doc)
            continue
        if not isinstance(doc, dict) or not isinstance(kind, str) or kind not in SINGULAR.values():
            print(f"error: {path}: document {i}: 'type' is {kind!r}; known: "
                  f"{', '.join(SINGULAR.values())}", file=sys.stderr)
            failures += 1
            continue
        name = doc.get("name", "")
        try:
            result = client.put(_path(kind, doc.get("mesh"), name), doc)
        except ApiError as exc:
            print(f"error: {kind} {name!r}: {exc}", file=sys.stderr)
            failures += 1
            continue
        verb = "created" if result["created"] else "unchanged" if result["unchanged"] else "updated"
        print(f"{kind.lower()} {name!r} {verb} (version {result['version']})", flush=True)
        for warning in result.get("warnings", []):
            print(f"warning: {kind} {name!r}: {warning}", file=sys.stderr)
    return 1 if failures else 0


def cmd_get(args: argparse.Namespace, client: ApiClient) -> int:
    if args.what.lower() in ZONE_WORDS:
        return cmd_get_zones(args, client)
    kind = _kind_of_word(args.what)
    if kind is None:
        raise SystemExit(f"error: unknown resource type {args.what!r}; "
                         f"known: {', '.join(PLURALS)}")
    single = args.name is not None
    if single:
        docs = [client.get(_path(kind, args.mesh, args.name))]
    else:
        docs = client.list_all(_path(kind, args.mesh), _labels(args.label))
    output = args.output or ("yaml" if single else "table")
    shown = docs[0] if single else _list_page(docs)
    if output == "json":
        print(json.dumps(shown, indent=2))
    elif output == "yaml":
        print(yaml.safe_dump(shown, sort_keys=False), end="")
    else:
        _table(kind, docs)
    return 0


def _labels(pairs: list[str] | None) -> dict[str, str]:
    labels = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --label {pair!r} is not KEY=VALUE")
        labels[key] = value
    return labels


def _table(kind: str, docs: list[dict[str, Any]]) -> None:
    from rich.table import Table

    # AGE last, from creationTime, as kumactl's and kubectl's tables show it
    columns: dict[str, list[str]] = {
        "Mesh": ["NAME"],
        "Dataplane": ["MESH", "NAME", "TAGS", "ADDRESS"],  # kumactl's
        "MeshService": ["MESH", "NAME", "VIP", "HOSTNAMES", "PORTS", "STATE", "DATAPLANES",
                        "ORIGIN"],
        "HostnameGenerator": ["NAME", "SELECTOR", "TEMPLATE"],
        **{kind.type_name: ["MESH", "NAME", "TARGETREF", *(s.upper() for s in kind.sections)]
           for kind in POLICY_KINDS},
        "MeshMultiZoneService": ["MESH", "NAME", "VIP", "HOSTNAMES", "PORTS", "SELECTOR",
                                 "MESHSERVICES"],
        "ZoneIngress": ["NAME", "ZONE", "ADDRESS", "ADVERTISED"],
    }
    table = Table(box=None, header_style="bold")
    for column in [*columns[kind], "AGE"]:
        table.add_column(column)
    now = datetime.now(UTC)
    for doc in docs:
        table.add_row(*_cells(kind, doc), age(doc.get("creationTime"), now))
    print_table(table)


def _cells(kind: str, doc: dict[str, Any]) -> list[str]:
    if kind == "Mesh":
        return [doc["name"]]
    if kind == "HostnameGenerator":
        selector = " ".join(
            kind + ":" + (",".join(f"{k}={v}" for k, v in s.get("matchLabels", {}).items())
                          or "*")
            for kind, s in doc["spec"]["selector"].items())
        return [doc["name"], selector, doc["spec"]["template"]]
    policy = policy_kind(kind)
    if policy is not None:  # every kind: its targetRef and one column per list of entries
        spec = doc["spec"]
        return [doc["mesh"], doc["name"], _ref(spec.get("targetRef", {"kind": "Mesh"})),
                *(", ".join(f"{_ref(entry['targetRef'])}: {_entry(entry)}"
                            for entry in spec.get(section, [])) or "-"
                  for section in policy.sections)]
    if kind == "MeshMultiZoneService":
        return _mmzs_cells(doc)
    if kind == "ZoneIngress":
        net = doc["networking"]
        advertised = (f"{net['advertisedAddress']}:{net['advertisedPort']}"
                      if "advertisedAddress" in net and "advertisedPort" in net else "-")
        return [doc["name"], doc.get("zone", "-"), f"{net['address']}:{net['port']}",
                advertised]
    if kind == "Dataplane":
        net = doc["networking"]
        return [doc["mesh"], doc["name"], dataplane_tags(doc),
                net.get("advertisedAddress") or net["address"]]
    status = doc.get("status", {})
    proxies = status.get("dataplaneProxies", {})
    origin = "generated" if doc["labels"].get("kuma.io/managed-by") else "user"
    return [
        doc["mesh"], doc["name"], ",".join(v["ip"] for v in status.get("vips", [])) or "-",
        ",".join(a["hostname"] for a in status.get("addresses", [])) or "-",
        ",".join(f"{p['port']}/{p.get('appProtocol', 'tcp')}" for p in doc["spec"]["ports"]),
        status.get("state", "-"),
        f"{proxies.get('healthy', 0)}/{proxies.get('total', 0)}", origin,
    ]


def dataplane_tags(doc: dict[str, Any]) -> str:
    """kumactl's TAGS of a Dataplane (kumahq/kuma v2.14 `get dataplanes`, `Dataplane.TagSet`):
    the tags of all its inbounds, each `key=value[,value...]` (values sorted, each once),
    sorted and joined by spaces: `kuma.io/service=web kuma.io/zone=west version=v1,v2`. The
    fold's `kuma.io/zone` tag shows the zone there (kumactl has no ZONE column)."""
    values: dict[str, set[str]] = {}
    for inbound in doc["networking"].get("inbound", []):
        for key, value in inbound.get("tags", {}).items():
            values.setdefault(key, set()).add(value)
    return " ".join(sorted(f"{key}={','.join(sorted(vals))}" for key, vals in values.items()))


def _mmzs_cells(doc: dict[str, Any]) -> list[str]:
    """MESHSERVICES: the matched ones as `<name>@<zone>` (Kuma's status names them so)."""
    status = doc.get("status", {})
    labels = doc["spec"]["selector"]["meshService"].get("matchLabels", {})
    matched = ",".join(f"{m['name']}@{m['zone']}" if m["zone"] else m["name"]
                       for m in status.get("meshServices", []))
    return [
        doc["mesh"], doc["name"], ",".join(v["ip"] for v in status.get("vips", [])) or "-",
        ",".join(a["hostname"] for a in status.get("addresses", [])) or "-",
        ",".join(f"{p['port']}/{p.get('appProtocol', 'tcp')}" for p in doc["spec"]["ports"]),
        ",".join(f"{k}={v}" for k, v in labels.items()), matched or "-",
    ]


def _ref(ref: dict[str, Any]) -> str:
    """A targetRef in a cell: `Mesh`, `MeshService/backend`, `MeshSubset{version=v1}`,
    `Dataplane{app=web}`."""
    text = str(ref["kind"]) + (f"/{ref['name']}" if ref.get("name") else "")
    selected = ref.get("tags") or ref.get("labels")
    if selected:
        text += "{" + ",".join(f"{k}={v}" for k, v in selected.items()) + "}"
    return text


def cmd_delete(args: argparse.Namespace, client: ApiClient) -> int:
    if args.kind.lower() in ZONE_WORDS:
        client.delete(f"/zones/{args.name}")
        print(f"zone {args.name!r} deleted")
        return 0
    kind = _kind_of_word(args.kind)
    if kind is None:
        raise SystemExit(f"error: unknown resource type {args.kind!r}; known: "
                         f"{', '.join(SINGULAR)}")
    result = client.delete(_path(kind, args.mesh, args.name))
    print(f"{kind.lower()} {args.name!r} deleted (version {result['version']})")
    return 0



def _entry(entry: dict[str, Any]) -> str:
    """A policy's `to[]`/`from[]` entry: its `default` flattened (`_flat`), or, for a
    route's, how many rules it has (`2 rules`)."""
    if "default" in entry:
        return _flat(entry["default"])
    rules = len(entry.get("rules", []))
    return f"{rules} rule" if rules == 1 else f"{rules} rules"


def _flat(conf: dict[str, Any], prefix: str = "") -> str:
    """A policy's `default`, one `path=value` per field: `connectionTimeout=1s
    http.requestTimeout=15s`, `http.numRetries=2 http.retryOn=5xx,reset`; a
    MeshTrafficPermission's lone `action` as its value (`Allow`)."""
    if list(conf) == ["action"] and not prefix:
        return str(conf["action"])
    parts = []
    for key, value in conf.items():
        if isinstance(value, dict):
            parts.append(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            parts.append(f"{prefix}{key}={','.join(str(v) for v in value)}")
        else:
            parts.append(f"{prefix}{key}={value}")
    return " ".join(parts)
