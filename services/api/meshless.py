"""Routes of the kinds that belong to no mesh, as in Kuma: hostname generators (global)
and zone ingresses (a zone's), these also with their proxies' insights (Kuma's
`/zoneingresses+insights`: ZoneIngressOverviews)."""

from __future__ import annotations

from typing import Any

from litestar import Response, delete, get, put

from events import ZONE_INGRESS_NODE
from services.api._reads import get_one, list_page
from services.api._state import ApiRequest
from services.api._synced import refuse_synced
from services.api._writes import applied, deleted, match_url, read_resource
from services.api.proxy_inspector import insights_of

__all__ = ["GENERATOR_ROUTES", "INGRESS_ROUTES"]


@get("/hostnamegenerators", summary="List hostname generators (global)")
async def list_generators(request: ApiRequest, size: int = 100, offset: int = 0
                          ) -> dict[str, Any]:
    return await list_page(request, "HostnameGenerator", "", size, offset)


@get("/hostnamegenerators/{name:str}", summary="Get a hostname generator")
async def get_generator(request: ApiRequest, name: str) -> Response[dict[str, Any]]:
    return await get_one(request, "HostnameGenerator", name, name)


@put("/hostnamegenerators/{name:str}", summary="Create or update a hostname generator",
     status_code=200)
async def put_generator(request: ApiRequest, name: str) -> Response[dict[str, Any]]:
    await refuse_synced(request, "HostnameGenerator", None, name)
    resource = await read_resource(request, "HostnameGenerator")
    match_url(resource, None, name)
    return await applied(request, resource)


@delete("/hostnamegenerators/{name:str}", summary="Delete a hostname generator (a default "
        "comes back)", status_code=200)
async def delete_generator(request: ApiRequest, name: str) -> Response[dict[str, Any]]:
    await refuse_synced(request, "HostnameGenerator", None, name)
    return await deleted(request, "HostnameGenerator", None, name)


GENERATOR_ROUTES = [list_generators, get_generator, put_generator, delete_generator]


@get("/zoneingresses", summary="List zone ingresses")
async def list_ingresses(request: ApiRequest, size: int = 100, offset: int = 0
                         ) -> dict[str, Any]:
    return await list_page(request, "ZoneIngress", "", size, offset)


@get("/zoneingresses/{name:str}", summary="Get a zone ingress")
async def get_ingress(request: ApiRequest, name: str) -> Response[dict[str, Any]]:
    return await get_one(request, "ZoneIngress", name, name)


@put("/zoneingresses/{name:str}", summary="Register or update a zone ingress (on its zone)",
     status_code=200)
async def put_ingress(request: ApiRequest, name: str) -> Response[dict[str, Any]]:
    await refuse_synced(request, "ZoneIngress", None, name)
    resource = await read_resource(request, "ZoneIngress")
    match_url(resource, None, name)
    return await applied(request, resource)


@delete("/zoneingresses/{name:str}", summary="Delete a zone ingress", status_code=200)
async def delete_ingress(request: ApiRequest, name: str) -> Response[dict[str, Any]]:
    await refuse_synced(request, "ZoneIngress", None, name)
    return await deleted(request, "ZoneIngress", None, name)


@get("/zoneingresses+insights", summary="List zone ingresses with their proxies' insights "
     "(ZoneIngressOverviews)")
async def list_ingress_overviews(request: ApiRequest, size: int = 100, offset: int = 0
                                 ) -> dict[str, Any]:
    page = await list_page(request, "ZoneIngress", "", size, offset)
    page["items"] = await _overviews(request, page["items"])
    return page


@get("/zoneingresses+insights/{name:str}", summary="A zone ingress with its proxy's insight "
     "(connected, gateway, xDS counters)")
async def ingress_overview(request: ApiRequest, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = (await get_one(request, "ZoneIngress", name, name)).content
    [found] = await _overviews(request, [doc])
    return found


async def _overviews(request: ApiRequest, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Kuma's `ZoneIngressOverview` of each rendered ZoneIngress: the ingress and its Envoy's
    insight, which its zone's gateways publish as they do a sidecar's (the insight's mesh part
    is `ZONE_INGRESS_NODE`, its node id's); on global, a zone's from that zone's, synced."""
    insights = await insights_of(request, ZONE_INGRESS_NODE, docs)
    return [{"type": "ZoneIngressOverview", "name": doc["name"],
             "labels": doc.get("labels", {}), "creationTime": doc["creationTime"],
             "modificationTime": doc["modificationTime"], "zoneIngress": doc,
             "zoneIngressInsight": insight}
            for doc, insight in zip(docs, insights, strict=True)]


INGRESS_ROUTES = [list_ingresses, get_ingress, put_ingress, delete_ingress,
                  list_ingress_overviews, ingress_overview]
