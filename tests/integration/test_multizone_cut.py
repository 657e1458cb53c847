"""A cut link between one global and two zones (east, west), each a real `meshlog up` with its
own embedded nats-server, zones joined to global over leafnodes (tests.integration._multizone):
east's link cut for 30 s while east, west and global change leaves each side serving and
converging after (the syncs restart the stalled sources when the link is back), each zone's
events once in every log."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from events.subjects import GLOBAL_ZONE
from tests._tcp_proxy import TcpProxy
from tests.harness import ControlPlane, wait_for
from tests.integration import _multizone
from tests.integration._multizone import (
    _dataplane,
    _get,
    _meshlog,
    msg_ids_of,
)

pytestmark = pytest.mark.integration

# this module's own global and zones (module-scoped fixtures)
joined, planes, link = _multizone.joined, _multizone.planes, _multizone.link


def _insight(cp: ControlPlane, zone: str) -> dict[str, Any]:
    overview = _get(cp, f"/zones/{zone}/_overview")
    assert overview is not None
    insight: dict[str, Any] = overview["zoneInsight"]
    return insight


def _export(cp: ControlPlane) -> dict[str, Any]:
    rows: dict[str, Any] = json.loads(_meshlog("export", "--data-dir", str(cp.data_dir)))["rows"]
    return rows


def _synced(cp: ControlPlane) -> dict[str, Any]:
    """The synced resources of `cp`'s export, normalised so that every control plane's are
    equal once converged. A MeshService or ZoneIngress is keyed by (zone, display name), not
    by its name (Kuma's hashed name outside its zone), and compared by its spec, labels and
    availability (`status.state` in its own zone, `spec.state` elsewhere, as Kuma syncs it);
    what each control plane assigns for itself is left out: `status` (VIPs, hostnames,
    MeshMultiZoneService matches), `meta` (versions are its own log's sequences, times its
    fold's), a ZoneIngress's `synced` flag, the implicit default HostnameGenerators each
    control plane has without an event, and the label `kuma.io/origin` (`zone` in its own
    zone and on global, `global` in the other zones, which get it through global, as in
    Kuma). Global's kinds are compared whole but for
    those. Dataplanes are not compared: another zone's are the fold's inputs
    (`remotedataplane`), checked through the MeshServices' `spec.state`."""
    rows = _export(cp)
    out: dict[str, Any] = {}
    for row in rows.get("meshservice", {}).values():
        labels = {k: v for k, v in row["labels"].items() if k != "kuma.io/origin"}
        spec = dict(row["spec"])
        available = spec.pop("state", None) or row["status"].get("state", "Unavailable")
        out[f"meshservice/{row['mesh']}/{labels['kuma.io/zone']}/"
            f"{labels['kuma.io/display-name']}"] = {"labels": labels, "spec": spec,
                                                    "available": available}
    for row in rows.get("zoneingress", {}).values():
        ingress = dict(row["zoneingress"])
        labels = ingress.pop("labels", {}) or {}
        display = labels.get("kuma.io/display-name", ingress.pop("name"))
        ingress.pop("name", None)
        out[f"zoneingress/{ingress.get('zone')}/{display}"] = ingress
    for row in rows.get("mesh", {}).values():
        out[f"mesh/{row['mesh']['name']}"] = row["mesh"]
    for row in rows.get("hostnamegenerator", {}).values():
        if row["origin"] == "default":
            continue  # an implicit default each control plane has of its own (no event)
        out[f"hostnamegenerator/{row['generator']['name']}"] = {
            "generator": row["generator"], "origin": row["origin"]}
    for row in rows.get("meshmultizoneservice", {}).values():
        out[f"meshmultizoneservice/{row['mesh']}/{row['name']}"] = {
            "labels": row["labels"], "spec": row["spec"]}
    for row in rows.get("zone", {}).values():
        out[f"zone/{row['name']}"] = {"enabled": row["enabled"],
                                      "deleted": row.get("deleted", False)}
    return out


def _one_view(planes: dict[str, ControlPlane], *, timeout: float, what: str
              ) -> dict[str, Any]:
    """Global's synced resources once east's and west's are the same (on a timeout, the
    differences)."""
    def views() -> list[dict[str, Any]]:
        return [_synced(planes[p]) for p in ("global", "east", "west")]

    try:
        return wait_for(lambda: (lambda v: v[0] if v[0] == v[1] == v[2] else None)(views()),
                        timeout=timeout, what=what)
    except AssertionError as exc:
        central, east, west = views()
        differ = {key: [v.get(key) for v in (central, east, west)]
                  for key in sorted(set(central) | set(east) | set(west))
                  if not central.get(key) == east.get(key) == west.get(key)}
        raise AssertionError(f"{exc}: global, east, west differ in {sorted(differ)}: "
                             + json.dumps(differ, indent=1, sort_keys=True)) from None


def _ms(name: str, port: int) -> dict[str, Any]:
    return {"type": "MeshService", "mesh": "default", "name": name, "labels": {"team": name},
            "spec": {"ports": [{"port": port, "targetPort": port}],
                     "selector": {"dataplaneTags": {"kuma.io/service": name}}}}


def _hg(name: str, template: str) -> dict[str, Any]:
    return {"type": "HostnameGenerator", "name": name, "spec": {
        "template": template, "selector": {"meshService": {"matchLabels": {"team": "none"}}}}}


def _config_of(cp: ControlPlane, proxy: str) -> str:
    response = cp.api.get(f"/meshes/default/dataplanes/{proxy}/_config")
    return response.text if response.status_code == 200 else ""


CUT_S = 30.0


def test_a_cut_link_keeps_both_sides_serving_and_converges_after(
        planes: dict[str, ControlPlane], link: TcpProxy) -> None:
    """East's link to global is cut for 30 s while east, west and global each create, update
    and delete: each side serves its own changes, global's insight shows east's lag growing
    (in seconds; in events unknown, not 0), and after the link returns every log holds the
    same synced resources and each zone's events exactly once."""
    central, east, west = planes["global"], planes["east"], planes["west"]
    central.apply({"type": "Mesh", "name": "default"})
    wait_for(lambda: _get(east, "/meshes/default") and _get(west, "/meshes/default"),
             timeout=30, what="the Mesh in both zones")
    east.apply(_dataplane("web-1", "web", "10.1.0.9"))
    for cp, zone in ((east, "e"), (west, "w")):
        cp.apply(_ms(f"{zone}-upd", 80))
        cp.apply(_ms(f"{zone}-del", 80))
    central.apply(_hg("hg-upd", "{{ .DisplayName }}.a.mesh"))
    central.apply(_hg("hg-del", "{{ .DisplayName }}.b.mesh"))
    before = _one_view(planes, timeout=60, what="one view before the cut")
    assert {"meshservice/default/east/e-del", "meshservice/default/west/w-del",
            "hostnamegenerator/hg-del"} <= set(before)

    link.cut()
    cut_at = time.monotonic()
    # both zones and global change during the cut: a create, an update and a delete each
    for cp, zone in ((east, "e"), (west, "w")):
        cp.apply(_ms(f"{zone}-new", 81))
        cp.apply(_ms(f"{zone}-upd", 82))
        assert cp.api.delete(f"/meshes/default/meshservices/{zone}-del").status_code == 200
    east.apply(_dataplane("api-1", "api", "10.1.0.1"))
    central.apply(_hg("hg-new", "{{ .DisplayName }}.c.mesh"))
    central.apply(_hg("hg-upd", "{{ .DisplayName }}.a2.mesh"))
    assert central.api.delete("/hostnamegenerators/hg-del").status_code == 200

    # east keeps serving: its API answers, and a local proxy's config has east's new service
    wait_for(lambda: "e-new" in _config_of(east, "web-1"), timeout=30,
             what="east's new service in web-1's config during the cut")
    assert _get(east, "/meshes/default/meshservices/e-del") is None
    # west and global, on their side of the cut, converge among themselves without east
    wait_for(lambda: "meshservice/default/west/w-new" in _synced(central)
             and "hostnamegenerator/hg-new" in _synced(west), timeout=30,
             what="west and global in sync during the cut")
    # global shows east silent: the lag in seconds grows; in events it cannot be known
    first = wait_for(lambda: (lambda i: i if not i["connected"] else None)(
        _insight(central, "east")), timeout=CUT_S, what="east shown disconnected")
    assert first["syncLag"]["events"] is None and "cannot be known" in first["reason"]
    later = wait_for(lambda: (lambda i: i if i["syncLag"]["seconds"] > first["syncLag"][
        "seconds"] + 1 else None)(_insight(central, "east")), timeout=CUT_S,
        what="east's lag growing")
    assert not later["connected"] and later["syncLag"]["events"] is None
    # and east, on its side, sees west (whose events come through global) silent as well
    seen_from_east = wait_for(lambda: (lambda i: i if not i["connected"] else None)(
        _insight(east, "west")), timeout=CUT_S, what="west shown disconnected in east")
    assert seen_from_east["syncLag"]["events"] is None
    # nothing is removed on a disconnect, and nothing crossed the cut
    east_view, central_view = _synced(east), _synced(central)
    assert "meshservice/default/west/w-del" in east_view  # west's delete did not reach east
    assert "meshservice/default/west/w-new" not in east_view
    assert "hostnamegenerator/hg-new" not in east_view and "hostnamegenerator/hg-del" in (
        east_view)
    assert "meshservice/default/east/e-new" not in central_view
    assert "meshservice/default/east/e-del" in central_view

    time.sleep(max(0.0, cut_at + CUT_S - time.monotonic()))  # the cut lasts 30 s
    assert time.monotonic() - cut_at >= CUT_S
    link.restore()
    restored_at = time.monotonic()

    after = _one_view(planes, timeout=120, what="convergence after the cut")
    caught_up_s = time.monotonic() - restored_at
    changed = {"meshservice/default/east/e-new", "meshservice/default/west/w-new",
               "meshservice/default/east/api", "hostnamegenerator/hg-new"}
    assert changed <= set(after)
    assert not {"meshservice/default/east/e-del", "meshservice/default/west/w-del",
                "hostnamegenerator/hg-del"} & set(after)
    for key in ("meshservice/default/east/e-upd", "meshservice/default/west/w-upd"):
        assert after[key]["spec"]["ports"][0]["port"] == 82
    assert after["hostnamegenerator/hg-upd"]["generator"]["spec"]["template"].endswith(".a2.mesh")
    assert set(after) == (set(before) | changed) - {
        "meshservice/default/east/e-del", "meshservice/default/west/w-del",
        "hostnamegenerator/hg-del"}
    wait_for(lambda: (lambda i: i if i["connected"] and i["syncLag"]["events"] == 0
                      and "reason" not in i else None)(_insight(central, "east")), timeout=30,
             what="east reconnected, its lag in events known again and no stale reason")
    # nothing lost, nothing duplicated: each zone's (and global's) events by Msg-Id, the same
    # ones in every log, in the same order, each once
    for zone in ("east", "west", GLOBAL_ZONE):
        def ids_in_every_log(z: str = zone) -> list[list[str]]:
            return [asyncio.run(msg_ids_of(cp, z)) for cp in (central, east, west)]

        try:
            ids = wait_for(lambda: (lambda i: i if i[0] == i[1] == i[2] else None)(
                ids_in_every_log()), timeout=30, what=f"{zone}'s events alike in every log")
        except AssertionError:
            ids = ids_in_every_log()
            assert ids[0] == ids[1] == ids[2], zone  # shows the difference
            raise
        assert ids[0] and all(ids[0]), f"{zone}: every event has a Msg-Id"
        assert len(set(ids[0])) == len(ids[0]), f"{zone}: an event is there twice"
    # the syncs restarted the stalled sources when the link came back, rather than waiting
    # out nats-server's retry backoff (services.runtime._source_nudge; nats-server's own retry
    # could only win both sides' race by landing within the second after the link's return),
    # within their permissions
    restarted = [name for name, cp in (("global", central), ("east", east))
                 if "restarted the event stream's sources" in (cp.data_dir / "up.log").read_text()]
    assert restarted, "no sync restarted its sources when the link came back"
    for name, cp in planes.items():
        server_log = (cp.data_dir / "nats" / "nats-server.log").read_text()
        assert [line for line in server_log.splitlines() if "Violation" in line] == [], name
    print(f"caught up {caught_up_s:.1f} s after the link returned; restarted by {restarted}")
