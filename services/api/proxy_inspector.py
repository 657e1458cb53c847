"""What the API knows only from the bus: proxy insights and the gateways' computed config.

    GET /meshes/{mesh}/dataplanes/{name}/_overview   the Dataplane + `dataplaneInsight`
    GET /meshes/{mesh}/dataplanes/{name}/_config     its computed xDS, asked of a gateway

`ProxyInspector` reads the shared insights bucket (`events.bus.insights`) and asks any gateway over
NATS request/reply (`events.bus.requests`), so the API never imports the gateway package. It also
fills MeshService `status.dataplaneProxies.connected` at read time: the number of the
MeshService's Dataplanes whose proxy is connected now (`total` and `healthy` are projected);
on global, a zone's MeshService counts its zone's from the zone's synced insights.

A proxy is connected when its insight has no disconnect time and its gateway was heard of
within `stale_after_s` (its last heartbeat, or the stream's connect time if later): a gateway
that died without its final writes leaves its proxies gone since it was last heard of, the
rule the gateways' reaper uses (xds_gateway/lifecycle.py). Insights unreadable -> the overview
still answers, saying so; `connected` stays as projected (0).

On global, a zone's Dataplane (listed under its synced name) has its proxy's insight from
global's copy of that zone's insights (`services.api._zone_insights`), in `_overview` and
`dataplanes+insights`; its `_config` stays with its zone's gateways (a 404 naming the zone).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import msgspec
from litestar import Response, get

from events import NotFound, TransientError, now_ms, rfc3339
from events.bus.insights import GatewayHeartbeat, JetStreamInsights, ProxyInsight
from events.bus.requests import ProxyRef, ServiceUnavailable, request, xds_config_subject
from events.identity.pki import NOT_BEFORE_SKEW_MS
from events.labels import DISPLAY_NAME_LABEL, ZONE_LABEL
from projections import (
    DataplaneRow,
    IdentityRow,
    MeshServiceRow,
    TrustRow,
    dataplane_matches,
    decode_typed,
)
from services.api._state import ApiRequest, api_state
from services.api._synced import name_in_zone, synced, synced_dataplane, synced_proxy
from services.api._ttl_cache import TtlCache
from services.api._zone_insights import SyncedInsights, verdict
from services.api.auth import ADMIN
from services.render import render_insight, render_row

__all__ = ["INSPECT_ROUTES", "ProxyInspector", "add_connected", "insights_of", "overview",
           "overviews"]

log = logging.getLogger("meshlog.api")

_Snapshot = tuple[dict[tuple[str, str], ProxyInsight], dict[str, GatewayHeartbeat]]


class ProxyInspector:
    def __init__(self, nc: Any, *, config_timeout_s: float = 5.0, snapshot_ttl_s: float = 1.0,
                 stale_after_s: float = 15.0, replicas: int = 1) -> None:
        """`nc`: the API's NATS connection (typed loosely: only `events` imports nats);
        `replicas`: of the insights bucket, should the API be the first to open it."""
        self._nc = nc
        self._replicas = replicas
        self._config_timeout_s = config_timeout_s
        self._stale_ms = int(stale_after_s * 1000)
        self._insights: JetStreamInsights | None = None
        self._snapshots = TtlCache[_Snapshot](ttl_s=snapshot_ttl_s,
                                              timeout_s=config_timeout_s, what="insights")
        """One read of the bucket per ttl, however many requests."""
        self.synced = SyncedInsights(nc, stale_ms=self._stale_ms, ttl_s=snapshot_ttl_s,
                                     timeout_s=config_timeout_s)
        """On global, the zones' proxies' insights."""

    async def _bucket(self) -> JetStreamInsights:
        if self._insights is None:  # opened on first use: the API starts without it
            self._insights = await JetStreamInsights.open(self._nc, replicas=self._replicas)
        return self._insights

    def verdict(self, insight: ProxyInsight, beat: GatewayHeartbeat | None,
                now: int) -> tuple[bool, int | None]:
        """(connected, disconnected_at) of one insight given its gateway's heartbeat, at `now`
        (Unix ms)."""
        return verdict(insight, beat, now, self._stale_ms)

    async def insight(self, mesh: str, name: str) -> dict[str, Any]:
        """Kuma's `dataplaneInsight` of one proxy, read now (not cached)."""
        try:
            bucket = await self._bucket()
            found = await bucket.proxy(mesh, name)
            if found is None:
                return {"connected": False, "subscriptions": []}
            insight = found[0]
            beat = await bucket.gateway(insight.gateway)
        except TransientError as exc:
            return {"unavailable": f"insights unavailable: {exc}"}
        except msgspec.DecodeError as exc:  # written by a gateway of another version?
            return {"unavailable": f"insights unreadable: {exc}"}
        connected, gone = self.verdict(insight, beat, now_ms())
        return render_insight(insight, connected=connected, disconnected_at=gone)

    async def insights_of(self, mesh: str, names: list[str]) -> dict[str, dict[str, Any]]:
        """`dataplaneInsight` of several proxies, from one snapshot at most `ttl` old (a list
        page costs one read of the bucket, not one per proxy)."""
        try:
            proxies, beats = await self._cached_snapshot()
        except (TransientError, msgspec.DecodeError) as exc:
            return {n: {"unavailable": f"insights unavailable: {exc}"} for n in names}
        now = now_ms()
        out: dict[str, dict[str, Any]] = {}
        for name in names:
            insight = proxies.get((mesh, name))
            if insight is None:
                out[name] = {"connected": False, "subscriptions": []}
                continue
            connected, gone = self.verdict(insight, beats.get(insight.gateway), now)
            out[name] = render_insight(insight, connected=connected, disconnected_at=gone)
        return out

    async def connected(self, mesh: str) -> set[str]:
        """Names of the mesh's proxies connected now (from a snapshot at most `ttl` old)."""
        proxies, beats = await self._cached_snapshot()
        now = now_ms()
        return {name for (m, name), insight in proxies.items()
                if m == mesh and self.verdict(insight, beats.get(insight.gateway), now)[0]}

    async def _cached_snapshot(self) -> _Snapshot:
        return await self._snapshots.get(self._scan)

    async def _scan(self) -> _Snapshot:
        return await (await self._bucket()).snapshot()

    async def config(self, mesh: str, name: str) -> bytes:
        """The proxy's computed xDS as JSON, from whichever gateway answers first."""
        subject = xds_config_subject(mesh, name)
        payload = msgspec.json.encode(await self._proxy_ref(mesh, name))
        reply = await request(self._nc, subject, payload, timeout_s=self._config_timeout_s)
        if reply.status == 200:
            return reply.body
        error = _error_of(reply.body)
        if reply.status == 404:  # the API's read models are ahead of that gateway's view
            raise ServiceUnavailable(f"the gateway has not caught up yet: {error}; retry")
        raise ServiceUnavailable(f"the gateway could not compute the config "
                                 f"({reply.status}): {error}")

    async def _proxy_ref(self, mesh: str, name: str) -> ProxyRef:
        """The proxy and what its live node said (user agent, DNS port), from its insight:
        the config is then the one its stream gets. Without an insight, a default Envoy's."""
        try:
            found = await (await self._bucket()).proxy(mesh, name)
        except (TransientError, msgspec.DecodeError) as exc:
            log.warning("_config of %s.%s without its insight: %s", mesh, name, exc)
            found = None
        if found is None:
            return ProxyRef(mesh, name)
        return ProxyRef(mesh, name, user_agent=found[0].user_agent, dns_port=found[0].dns_port)


def _error_of(body: bytes) -> str:
    try:
        return str(msgspec.json.decode(body).get("error", body[:200]))
    except (msgspec.DecodeError, AttributeError):
        return repr(body[:200])


async def add_connected(request: ApiRequest, rows: Sequence[object],
                        docs: Sequence[dict[str, Any]]) -> None:
    """Set `status.dataplaneProxies.connected` of the MeshService docs among `docs` (rendered
    from `rows`, same order), counting the Dataplanes its `total` counts: this control plane's
    from its own insights; on global, a zone's MeshService (its own or generated, synced) its
    zone's Dataplanes from the zone's insights synced to global (`_zone_insights`: the zone's
    rule, and no proxy called connected once its zone's heartbeats are stale over a cut
    link). Kuma's global shows the status its zone computed (KDS syncs it zone -> global) from
    the zone's DataplaneInsights: the same count, from the same insights. In a zone, another
    zone's MeshService keeps the projected 0 (Kuma strips status global -> zone; a zone has
    no other zone's insights). Insights unreadable: the projected value (0) stays."""
    state = api_state(request.app)
    inspector = state.inspector
    services = [(r, d) for r, d in zip(rows, docs, strict=True) if isinstance(r, MeshServiceRow)]
    if inspector is None or not services:
        return
    commands = state.commands
    local: list[tuple[MeshServiceRow, dict[str, Any]]] = []
    zoned: list[tuple[MeshServiceRow, dict[str, Any], str]] = []
    for row, doc in services:
        zone = row.labels.get(ZONE_LABEL)
        if commands.deployment == "global" and zone is not None and synced(request, row.labels):
            zoned.append((row, doc, zone))
        elif commands.deployment != "zone" or zone is None or zone == commands.zone:
            local.append((row, doc))  # in a zone, another zone's keeps its 0
    for mesh in sorted({r.mesh for r, _ in local}):
        try:
            online = await inspector.connected(mesh)
        except (TransientError, msgspec.DecodeError) as exc:
            log.warning("dataplaneProxies.connected left at 0: %s", exc)
            break
        dataplanes = [] if not online else [
            decode_typed(DataplaneRow, body)
            for key, body in await state.store.scan("dataplane", f"{mesh}/")
            if key.partition("/")[2] in online]
        for row, doc in local:
            if row.mesh == mesh:
                _set_connected(doc, row, dataplanes)
    for mesh in sorted({r.mesh for r, _, _ in zoned}):
        try:
            remote = await inspector.synced.connected(mesh)
        except (TransientError, msgspec.DecodeError) as exc:
            log.warning("dataplaneProxies.connected of the zones' MeshServices left at 0: %s",
                        exc)
            break
        by_zone: dict[str, list[DataplaneRow]] = {}
        if remote:
            for _, body in await state.store.scan("remotedataplane", f"{mesh}/"):
                dp = decode_typed(DataplaneRow, body)
                labels = dp.dataplane.labels
                zone = labels.get(ZONE_LABEL, "")
                if (zone, name_in_zone(dp.dataplane.name, mesh, labels)) in remote:
                    by_zone.setdefault(zone, []).append(dp)
        for row, doc, zone in zoned:
            if row.mesh == mesh:
                _set_connected(doc, row, by_zone.get(zone, []))


def _set_connected(doc: dict[str, Any], row: MeshServiceRow, online: list[DataplaneRow]
                   ) -> None:
    """`connected` of MeshService `row`'s doc: how many of the `online` Dataplanes it selects."""
    tags = row.spec.selector.dataplane_tags
    count = sum(dataplane_matches(dp.dataplane, tags) for dp in online)
    proxies = doc.setdefault("status", {}).setdefault(
        "dataplaneProxies", {"total": 0, "connected": 0, "healthy": 0})
    proxies["connected"] = count


# --- routes -----------------------------------------------------------------------------------


async def _dataplane(request: ApiRequest, mesh: str, plural: str, name: str, *,
                     synced: bool = False) -> DataplaneRow:
    """The Dataplane `name` of `mesh`; with `synced`, a zone's synced to global too."""
    if plural != "dataplanes":
        raise NotFound(f"{plural!r} have no _overview or _config; only dataplanes do")
    body = await api_state(request.app).store.get("dataplane", f"{mesh}/{name}")
    if body is None:
        remote = await synced_dataplane(request, mesh, name)
        if remote is not None and synced:
            return remote
        if remote is not None:
            labels = remote.dataplane.labels
            zone, display = labels.get(ZONE_LABEL), labels.get(DISPLAY_NAME_LABEL, name)
            raise NotFound(f"Dataplane {name!r} of mesh {mesh!r} is zone {zone!r}'s Dataplane "
                           f"{display!r}, synced here: its proxy's _config is computed by "
                           f"zone {zone!r}'s gateways: ask zone {zone!r}'s control plane "
                           f"(as {display!r})")
        raise NotFound(f"Dataplane {name!r} not found in mesh {mesh!r}")
    return decode_typed(DataplaneRow, body)


# `{plural}`, not a literal "dataplanes": a literal segment would shadow the generic routes
# of `services.api.meshes` (the router does not backtrack)
@get("/meshes/{mesh:str}/{plural:str}/{name:str}/_overview",
     summary="A Dataplane with its proxy's insight (connected, gateway, xDS counters)")
async def dataplane_overview(request: ApiRequest, mesh: str, plural: str, name: str
                             ) -> dict[str, Any]:
    doc = render_row(await _dataplane(request, mesh, plural, name, synced=True))
    inspector = api_state(request.app).inspector
    remote = synced_proxy(request, doc)
    if inspector is None:
        insight = _NO_NATS
    elif remote is not None:  # a zone's, on global: its insight as synced from the zone
        insight = (await inspector.synced.insights_of(mesh, [remote]))[remote]
    else:
        insight = await inspector.insight(mesh, name)
    mtls = await _mtls(request, mesh, name)
    if mtls is not None:
        insight = {**insight, "mTLS": mtls}
    return overview(mesh, doc, insight)


async def _mtls(request: ApiRequest, mesh: str, name: str) -> dict[str, Any] | None:
    """Kuma's `dataplaneInsight.mTLS` of a Dataplane of a mesh with mTLS on: which backend
    issued its certificate, until when it is valid, when it was issued (never the key)."""
    store = api_state(request.app).store
    identity, trust = (await store.get("identity", f"{mesh}/{name}"),
                       await store.get("trust", mesh))
    if identity is None or trust is None:
        return None
    row, trust_row = decode_typed(IdentityRow, identity), decode_typed(TrustRow, trust)
    return {"issuedBackend": row.backend,
            "certificateExpirationTime": rfc3339(row.not_after),
            "lastCertificateRegeneration": rfc3339(row.not_before + NOT_BEFORE_SKEW_MS),
            "mode": trust_row.mode,
            "identities": row.uris}


def overview(mesh: str, doc: dict[str, Any], insight: dict[str, Any]) -> dict[str, Any]:
    """Kuma's `DataplaneOverview`: a rendered Dataplane and its proxy's insight."""
    return {"type": "DataplaneOverview", "mesh": mesh, "name": doc["name"],
            "labels": doc.get("labels", {}), "creationTime": doc["creationTime"],
            "modificationTime": doc["modificationTime"], "dataplane": doc,
            "dataplaneInsight": insight}


async def overviews(request: ApiRequest, mesh: str, docs: list[dict[str, Any]]
                    ) -> list[dict[str, Any]]:
    """`overview` of each rendered Dataplane of a list page (`dataplanes+insights`)."""
    return [overview(mesh, d, insight)
            for d, insight in zip(docs, await insights_of(request, mesh, docs), strict=True)]


async def insights_of(request: ApiRequest, mesh: str, docs: list[dict[str, Any]]
                      ) -> list[dict[str, Any]]:
    """The insight of each rendered proxy resource of `docs` (Dataplanes of `mesh`, or zone
    ingresses with `ZONE_INGRESS_NODE` as `mesh`), in order: this control plane's from its
    insights bucket, a zone's synced to global from that zone's (one snapshot of each)."""
    inspector = api_state(request.app).inspector
    if inspector is None:
        return [_NO_NATS for _ in docs]
    # each doc's insight: here (None), from a zone's synced insights on global ((zone,
    # name)), or held elsewhere (False): in a zone, another zone's ingress (synced there so
    # its services are reached through it), whose Envoy's insights this zone has not
    where: dict[str, tuple[str, str] | bool | None] = {}
    for doc in docs:
        labels = doc.get("labels", {})
        where[doc["name"]] = (synced_proxy(request, doc) or False
                              if synced(request, labels) else None)
    names = [name for name, w in where.items() if w is None]
    zoned = [w for w in where.values() if isinstance(w, tuple)]
    insights = await inspector.insights_of(mesh, names) if names else {}
    from_zones = await inspector.synced.insights_of(mesh, zoned) if zoned else {}
    return [insights[d["name"]] if (w := where[d["name"]]) is None
            else from_zones[w] if isinstance(w, tuple) else _held_elsewhere(d)
            for d in docs]


def _held_elsewhere(doc: dict[str, Any]) -> dict[str, Any]:
    labels = doc.get("labels", {})
    zone = labels.get(ZONE_LABEL)
    display = labels.get(DISPLAY_NAME_LABEL, doc["name"])
    where = (f"zone {zone!r}'s control plane (as {display!r}) or global's" if zone
             else "the control plane that wrote it")
    return {"unavailable": f"synced here from another control plane: its proxy's insight is "
                           f"on {where}"}


_NO_NATS: dict[str, Any] = {
    "unavailable": "insights unavailable: this API process has no NATS connection"}


@get("/meshes/{mesh:str}/{plural:str}/{name:str}/_config",
     summary="The proxy's computed xDS (listeners, clusters, endpoints), from a gateway (admin)",
     opt={"access": ADMIN})
async def dataplane_config(request: ApiRequest, mesh: str, plural: str, name: str
                           ) -> Response[bytes]:
    await _dataplane(request, mesh, plural, name)
    inspector = api_state(request.app).inspector
    if inspector is None:
        raise ServiceUnavailable("this API process has no NATS connection to ask a gateway")
    return Response(await inspector.config(mesh, name), media_type="application/json")


INSPECT_ROUTES = [dataplane_overview, dataplane_config]
