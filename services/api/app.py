"""The HTTP API, in Kuma's REST shape (port 5681 by default).

    GET    /meshes                               list meshes
    GET    /meshes/{mesh}                        one mesh
    PUT    /meshes/{mesh}                        create or update a mesh
    DELETE /meshes/{mesh}
    GET    /meshes/{mesh}/{plural}               {"total", "items", "next"}; ?size=&offset=
    GET    /meshes/{mesh}/{plural}/{name}
    PUT    /meshes/{mesh}/{plural}/{name}        body: the resource (JSON or YAML)
    DELETE /meshes/{mesh}/{plural}/{name}
    GET    /hostnamegenerators[/{name}]          global kind, as in Kuma; PUT and DELETE too
    GET    /zoneingresses[/{name}]               a zone's ingresses (no mesh), as in Kuma; PUT
                                                  and DELETE on the zone it belongs to
    GET    /meshes/{mesh}/meshtrafficpermissions[/{name}]   policies, as in Kuma; PUT, DELETE
    GET    /meshes/{mesh}/meshmultizoneservices[/{name}]    PUT and DELETE on global (or a
                                                            standalone control plane) only
    GET    /meshes/{mesh}/dataplanes/{name}/_overview   the Dataplane + its proxy's insight
    GET    /meshes/{mesh}/dataplanes+insights           a list page of those (Kuma's name)
    GET    /meshes/{mesh}/dataplanes/{name}/_config     its computed xDS (asked of a gateway)
    GET    /zones[/{name}[/_overview]], /zone-insights; PUT, DELETE /zones/{name} (global)
                                          services.api.zones
    GET    /ready                                 200 once the read models answer
    GET    /metrics                               Prometheus metrics of every part of the process
    GET    /schema/openapi.json                  the OpenAPI document
    POST   /tokens/dataplane, /tokens/user       generate a token (services.api.tokens)
    POST   /tokens/{dataplane,user}/revocations  revoke one

Who may do what (services.api.auth): reads are open; writes need a user token (`Authorization:
Bearer`) or a loopback client (admin unless turned off); `_config`, tokens and the read-model
swap need admin. A refusal is a 401 (with `WWW-Authenticate: Bearer`) or a 403.

Writes go to the log (`events.commands`); reads come from the read models. A write answers
once the projector has folded it (bounded wait), so a `get` right after an `apply` sees it.
A write's answer lists Kuma's deprecation `warnings` of the resource, if it has any.
Optimistic concurrency: GET returns `ETag: "<version>"`; a write with `If-Match` fails with
409 if the resource moved on. Errors are RFC 7807 documents; invalid input lists every
violation in `invalid_parameters` as `{"field", "reason"}`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Litestar, Response, delete, get, post, put
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig

from events import (
    Conflict,
    IdempotencyKeyReused,
    InvalidResource,
    JetStreamUnavailable,
    Mesh,
    NotFound,
    Resource,
    TooLarge,
    TransientError,
    Violation,
    decode_resource,
    deprecations,
)
from events.bus.sources import SourceState
from events.bus.trace_context import tracer
from events.commands import Commands, NoSecretKey, WriteResult
from events.documents import MAX_DOCUMENT_BYTES, load_json, load_yaml
from events.resources import MeshScopedResource
from projections import (
    DataplaneRow,
    HostnameGeneratorRow,
    MeshMultiZoneServiceRow,
    MeshRow,
    MeshServiceRow,
    MeshTrafficPermissionRow,
    ReadModelStore,
    StoreError,
    StoreUnavailable,
    ZoneIngressRow,
    decode_row,
)
from services.api._state import ApiRequest, ApiState, api_state, app_state, await_projection
from services.api.auth import ADMIN, ApiAuth, Forbidden, NotAuthenticated, guard, require
from services.api.metrics import metrics
from services.api.proxy_inspector import INSPECT_ROUTES, ProxyInspector, add_connected, overviews
from services.api.tokens import TOKEN_ROUTES
from services.api.tracing import RequestTracing
from services.api.zones import ZONE_ROUTES
from services.render import GLOBAL_KINDS, PLURALS, render_row

__all__ = ["ApiState", "api_state", "create_app"]

log = logging.getLogger("meshlog.api")

_COLLECTION = {"Mesh": "mesh", "Dataplane": "dataplane", "MeshService": "meshservice",
               "HostnameGenerator": "hostnamegenerator",
               "MeshTrafficPermission": "meshtrafficpermission",
               "MeshMultiZoneService": "meshmultizoneservice",
               "ZoneIngress": "zoneingress"}
_MAX_PAGE = 1000


def _state(request: ApiRequest) -> ApiState:
    return api_state(request.app)


# --- reads ------------------------------------------------------------------------------------


@get("/meshes", summary="List meshes")
async def list_meshes(request: ApiRequest, size: int = 100, offset: int = 0) -> dict[str, Any]:
    return await _list(request, "Mesh", "", size, offset)


@get("/meshes/{mesh:str}", summary="Get a mesh")
async def get_mesh(request: ApiRequest, mesh: str) -> Response[dict[str, Any]]:
    return await _get_one(request, "Mesh", mesh, mesh)


@get("/meshes/{mesh:str}/{plural:str}", summary="List resources of a mesh")
async def list_resources(request: ApiRequest, mesh: str, plural: str, size: int = 100,
                         offset: int = 0) -> dict[str, Any]:
    if plural == "dataplanes+insights":  # Kuma's list of DataplaneOverviews
        page = await _list(request, "Dataplane", f"{mesh}/", size, offset)
        page["items"] = await overviews(request, mesh, page["items"])
        return page
    return await _list(request, _kind(plural), f"{mesh}/", size, offset)


@get("/meshes/{mesh:str}/{plural:str}/{name:str}", summary="Get a resource")
async def get_resource(request: ApiRequest, mesh: str, plural: str, name: str
                       ) -> Response[dict[str, Any]]:
    return await _get_one(request, _kind(plural), f"{mesh}/{name}", name)


async def _get_one(request: ApiRequest, kind: str, key: str, name: str) -> Response[dict[str, Any]]:
    body = await _state(request).store.get(_COLLECTION[kind], key)
    if body is None:
        raise NotFound(f"{kind} {name!r} not found")
    row = decode_row(_COLLECTION[kind], body)
    headers = {}
    version = _version_of(row)
    if version is not None and not _generated(row):
        # a generated row's version is not its subject's sequence
        headers["ETag"] = f'"{version}"'
    doc = render_row(row)
    await add_connected(_state(request).inspector, _state(request).store, [row], [doc])
    return Response(doc, headers=headers)


def _version_of(row: object) -> int | None:
    """The resource's version (the sequence of the event that last changed it)."""
    match row:
        case (MeshRow(meta=meta) | DataplaneRow(meta=meta) | HostnameGeneratorRow(meta=meta)
              | MeshServiceRow(meta=meta) | MeshTrafficPermissionRow(meta=meta)
              | MeshMultiZoneServiceRow(meta=meta) | ZoneIngressRow(meta=meta)):
            return meta.version
        case _:
            return None


def _generated(row: object) -> bool:
    """Made by the control plane: no version of the user's to lock on."""
    return ((isinstance(row, MeshServiceRow) and row.origin == "generated")
            or (isinstance(row, HostnameGeneratorRow) and row.origin == "default"))


async def _list(request: ApiRequest, kind: str, prefix: str, size: int, offset: int
                ) -> dict[str, Any]:
    if not 1 <= size <= _MAX_PAGE or offset < 0:
        raise InvalidResource("query", [Violation(
            "size" if not 1 <= size <= _MAX_PAGE else "offset",
            f"size must be in 1..{_MAX_PAGE} and offset >= 0 (got size={size}, offset={offset})")])
    wanted = _label_filter(request)
    rows = [decode_row(_COLLECTION[kind], b)
            for _, b in await _state(request).store.scan(_COLLECTION[kind], prefix)]
    if wanted:
        rows = [r for r in rows if all(_labels_of(r).get(k) == v for k, v in wanted.items())]
    following = offset + size
    next_url = None
    if following < len(rows):
        base = str(request.base_url).rstrip("/")
        query = "".join(f"&filter[labels.{k}]={v}" for k, v in sorted(wanted.items()))
        next_url = f"{base}{request.url.path}?size={size}&offset={following}{query}"
    page = rows[offset:following]
    items = [render_row(r) for r in page]
    await add_connected(_state(request).inspector, _state(request).store, page, items)
    return {"total": len(rows), "items": items,
            "next": next_url}


def _labels_of(row: object) -> dict[str, str]:
    match row:
        case (MeshRow(mesh=resource) | DataplaneRow(dataplane=resource)
              | HostnameGeneratorRow(generator=resource)
              | MeshTrafficPermissionRow(policy=resource)
              | ZoneIngressRow(zoneingress=resource)):
            return resource.labels
        case MeshServiceRow(labels=labels) | MeshMultiZoneServiceRow(labels=labels):
            return labels
        case _:
            return {}


def _label_filter(request: ApiRequest) -> dict[str, str]:
    """`?filter[labels.K]=V` (repeatable, all must match), Kuma's list filter."""
    wanted = {}
    for key, value in request.query_params.items():
        if key.startswith("filter[labels.") and key.endswith("]"):
            wanted[key[len("filter[labels."):-1]] = value
        elif key.startswith("filter"):
            raise InvalidResource("query", [Violation(
                key, "unknown filter; use filter[labels.KEY]=VALUE")])
    return wanted


@get("/ready", summary="Readiness: the read models answer")
async def ready(request: ApiRequest) -> dict[str, Any]:
    store = _state(request).store
    quarantined = len(await store.scan("quarantine"))
    return {"status": "ready", "projectedSequence": await store.checkpoint(),
            "quarantinedEvents": quarantined}


@get("/_quarantine", summary="Events the projector could not apply (it stopped at the first)")
async def quarantine(request: ApiRequest) -> dict[str, Any]:
    rows = await _state(request).store.scan("quarantine")
    items = [msgspec.json.decode(body) for _, body in rows]
    return {"total": len(items), "items": items, "next": None}


class SwapRequest(msgspec.Struct):
    database: str


@post("/_admin/read-models", summary="Swap to read models rebuilt by `meshlog replay`",
      status_code=200, opt={"access": ADMIN})
async def swap_read_models(request: ApiRequest, data: SwapRequest) -> dict[str, Any]:
    readmodels = _state(request).readmodels
    if readmodels is None:
        raise Conflict("read-models", 0, "this API process does not own its read models "
                       "(only `meshlog up` swaps); restart the processes with --database")
    seq = await readmodels.swap(data.database)
    return {"database": data.database, "caughtUpTo": seq}


@get("/_admin/projectors", summary="Who leads among the projectors of `meshlog up "
     "--projectors N`", opt={"access": ADMIN})
async def projectors(request: ApiRequest) -> dict[str, Any]:
    status = _state(request).projectors
    if status is None:
        raise NotFound("no projector lease here: this process runs one projector (meshlog up "
                       "--projectors 1) or none (meshlog api); a `meshlog projector` process "
                       "answers GET /ready on its --metrics-port")
    items = await status()
    return {"total": len(items), "items": items, "next": None}


# --- writes -----------------------------------------------------------------------------------


@put("/meshes/{mesh:str}", summary="Create or update a mesh", status_code=200)
async def put_mesh(request: ApiRequest, mesh: str) -> Response[dict[str, Any]]:
    resource = await _resource(request, "Mesh")
    _match_url(resource, None, mesh)
    if isinstance(resource, Mesh):
        stored = await _state(request).commands.stored_mesh(mesh)
        if resource.mtls != (stored.mtls if stored is not None else None):
            # every CA a Mesh lists is trusted by all its proxies: whoever adds one can mint
            # any identity of the mesh (Kuma keeps provided CA keys in admin-only Secrets)
            require(request.user, ADMIN, f"change the mTLS of mesh {mesh!r}")
    return await _write(request, await _state(request).commands.apply(
        resource, if_match=_if_match(request), idempotency_key=_idempotency_key(request)))


@put("/meshes/{mesh:str}/{plural:str}/{name:str}", summary="Create or update a resource",
     status_code=200)
async def put_resource(request: ApiRequest, mesh: str, plural: str, name: str
                       ) -> Response[dict[str, Any]]:
    resource = await _resource(request, _kind(plural))
    _match_url(resource, mesh, name)
    return await _write(request, await _state(request).commands.apply(
        resource, if_match=_if_match(request), idempotency_key=_idempotency_key(request)),
        warnings=deprecations(resource))


@delete("/meshes/{mesh:str}", summary="Delete a mesh", status_code=200)
async def delete_mesh(request: ApiRequest, mesh: str) -> Response[dict[str, Any]]:
    return await _write(request, await _state(request).commands.delete(
        "Mesh", None, mesh, if_match=_if_match(request)))


@delete("/meshes/{mesh:str}/{plural:str}/{name:str}", summary="Delete a resource",
        status_code=200)
async def delete_resource(request: ApiRequest, mesh: str, plural: str, name: str
                          ) -> Response[dict[str, Any]]:
    kind, state = _kind(plural), _state(request)
    try:
        result = await state.commands.delete(kind, mesh, name, if_match=_if_match(request))
    except NotFound:
        # The log has nothing to delete. A generated MeshService in its grace period (its
        # Dataplanes gone) is still shown, though: say why it cannot be deleted.
        body = await state.store.get("meshservice", f"{mesh}/{name}") if (
            kind == "MeshService") else None
        if body is not None and _generated(decode_row("meshservice", body)):
            raise Conflict("meshservice", 0, f"MeshService {name!r} is generated from Dataplane "
                           "inbounds; it goes when its Dataplanes go (after the grace "
                           "period)") from None
        raise
    return await _write(request, result)


@get("/hostnamegenerators", summary="List hostname generators (global)")
async def list_generators(request: ApiRequest, size: int = 100, offset: int = 0
                          ) -> dict[str, Any]:
    return await _list(request, "HostnameGenerator", "", size, offset)


@get("/hostnamegenerators/{name:str}", summary="Get a hostname generator")
async def get_generator(request: ApiRequest, name: str) -> Response[dict[str, Any]]:
    return await _get_one(request, "HostnameGenerator", name, name)


@put("/hostnamegenerators/{name:str}", summary="Create or update a hostname generator",
     status_code=200)
async def put_generator(request: ApiRequest, name: str) -> Response[dict[str, Any]]:
    resource = await _resource(request, "HostnameGenerator")
    _match_url(resource, None, name)
    return await _write(request, await _state(request).commands.apply(
        resource, if_match=_if_match(request), idempotency_key=_idempotency_key(request)))


@delete("/hostnamegenerators/{name:str}", summary="Delete a hostname generator (a default "
        "comes back)", status_code=200)
async def delete_generator(request: ApiRequest, name: str) -> Response[dict[str, Any]]:
    return await _write(request, await _state(request).commands.delete(
        "HostnameGenerator", None, name, if_match=_if_match(request)))


_GENERATOR_ROUTES = [list_generators, get_generator, put_generator, delete_generator]


@get("/zoneingresses", summary="List zone ingresses")
async def list_ingresses(request: ApiRequest, size: int = 100, offset: int = 0
                         ) -> dict[str, Any]:
    return await _list(request, "ZoneIngress", "", size, offset)


@get("/zoneingresses/{name:str}", summary="Get a zone ingress")
async def get_ingress(request: ApiRequest, name: str) -> Response[dict[str, Any]]:
    return await _get_one(request, "ZoneIngress", name, name)


@put("/zoneingresses/{name:str}", summary="Register or update a zone ingress (on its zone)",
     status_code=200)
async def put_ingress(request: ApiRequest, name: str) -> Response[dict[str, Any]]:
    resource = await _resource(request, "ZoneIngress")
    _match_url(resource, None, name)
    return await _write(request, await _state(request).commands.apply(
        resource, if_match=_if_match(request), idempotency_key=_idempotency_key(request)))


@delete("/zoneingresses/{name:str}", summary="Delete a zone ingress", status_code=200)
async def delete_ingress(request: ApiRequest, name: str) -> Response[dict[str, Any]]:
    return await _write(request, await _state(request).commands.delete(
        "ZoneIngress", None, name, if_match=_if_match(request)))


_INGRESS_ROUTES = [list_ingresses, get_ingress, put_ingress, delete_ingress]


async def _write(request: ApiRequest, result: WriteResult, *,
                 warnings: list[str] | None = None) -> Response[dict[str, Any]]:
    projected = await await_projection(_state(request), result.seq)
    headers = {"ETag": f'"{result.seq}"'}
    if not projected:
        headers["Meshlog-Projection"] = "pending"
    body: dict[str, Any] = {"version": result.seq, "created": result.created,
                            "unchanged": result.unchanged}
    if warnings:  # Kuma's CreateOrUpdateSuccessResponse
        body["warnings"] = warnings
    return Response(body, status_code=201 if result.created else 200, headers=headers)


# --- helpers ----------------------------------------------------------------------------------


def _kind(plural: str) -> str:
    kind = PLURALS.get(plural)
    if kind is None or kind in GLOBAL_KINDS:
        known = ", ".join(p for p, k in PLURALS.items() if k not in GLOBAL_KINDS)
        raise NotFound(f"unknown resource type {plural!r}; known: {known}")
    return kind


async def _resource(request: ApiRequest, kind: str) -> Resource:
    """The request's document as a validated resource. Parsing and checking are bounded
    (`events.documents`) and run on a worker thread, so a large or hostile body never stalls
    the loop that serves every other request, the projector and the gateway."""
    raw = await request.body()
    content_type = request.headers.get("content-type", "")
    return await asyncio.to_thread(_decode, raw, content_type, kind)


def _decode(raw: bytes, content_type: str, kind: str) -> Resource:
    if not raw.strip():
        raise InvalidResource("request", [Violation("", "the request body is empty")])
    load = load_yaml if "yaml" in content_type else load_json
    document = load(raw, "the body", invalid="is not valid JSON/YAML")
    return decode_resource(document, kind)


def _match_url(resource: Resource, mesh: str | None, name: str) -> None:
    violations = []
    if resource.name != name:
        violations.append(Violation("name", f"{resource.name!r} does not match the URL's {name!r}"))
    # `mesh` is given for the mesh-scoped kinds only (`_kind` refuses the global ones)
    if mesh is not None and isinstance(resource, MeshScopedResource) and resource.mesh != mesh:
        violations.append(Violation("mesh", f"{resource.mesh!r} does not match the URL's {mesh!r}"))
    if violations:
        raise InvalidResource(type(resource).__name__, violations)


def _if_match(request: ApiRequest) -> int | None:
    value = request.headers.get("if-match")
    if value is None:
        return None
    try:
        return int(value.strip().strip('"'))
    except ValueError:
        raise InvalidResource("request", [Violation(
            "If-Match", f"{value!r} is not a version (use the ETag of a GET)")]) from None


def _idempotency_key(request: ApiRequest) -> str | None:
    return request.headers.get("idempotency-key")


# --- errors -----------------------------------------------------------------------------------


_RETRY_AFTER_S = 2
"""Seconds a client is asked to wait before retrying a write JetStream did not take."""


def _problem(status: int, title: str, detail: str, **extra: Any) -> Response[dict[str, Any]]:
    return Response({"type": "about:blank", "status": status, "title": title, "detail": detail,
                     **extra}, status_code=status, media_type="application/problem+json")


def _on_error(_: ApiRequest, exc: Exception) -> Response[dict[str, Any]]:
    match exc:
        case NotAuthenticated():
            response = _problem(401, "Unauthorized", str(exc))
            response.headers["WWW-Authenticate"] = 'Bearer realm="meshlog"'
            return response
        case Forbidden():
            return _problem(403, "Forbidden", str(exc))
        case InvalidResource():
            return _problem(400, "Invalid resource", str(exc), invalid_parameters=[
                {"field": v.path, "reason": v.message} for v in exc.violations])
        case NotFound():
            return _problem(404, "Not found", str(exc))
        case Conflict():
            return _problem(409, "Conflict", str(exc))
        case TooLarge():
            return _problem(413, "Payload too large", str(exc), limit=exc.limit, size=exc.size)
        case IdempotencyKeyReused():
            return _problem(422, "Idempotency-Key reused", str(exc))
        case StoreError() if not isinstance(exc, StoreUnavailable):
            return _problem(409, "Conflict", str(exc))
        case JetStreamUnavailable():
            # RFC 7807 with RFC 9110's Retry-After: a write may be retried as it is
            response = _problem(503, "JetStream unavailable", str(exc))
            response.headers["Retry-After"] = str(_RETRY_AFTER_S)
            return response
        case TransientError() | StoreUnavailable() | NoSecretKey():
            return _problem(503, "Unavailable", str(exc))
        case HTTPException() if exc.status_code == 413:  # Litestar's request_max_body_size
            return _problem(413, "Payload too large", f"the body is more than "
                            f"{MAX_DOCUMENT_BYTES} bytes", limit=MAX_DOCUMENT_BYTES)
        case HTTPException():
            return _problem(exc.status_code, "Request failed", exc.detail)
        case _:
            log.exception("unexpected error in the API", exc_info=exc)
            return _problem(500, "Internal error", f"{type(exc).__name__}: {exc}")


def _auth_context(app: Litestar) -> tuple[ApiAuth, ReadModelStore]:
    state = api_state(app)
    return state.auth, state.store


def create_app(commands: Commands, store: ReadModelStore, *,
               projection_wait_s: float = 5.0,
               inspector: ProxyInspector | None = None,
               auth: ApiAuth | None = None,
               sources: Callable[[], Awaitable[list[SourceState]]] | None = None) -> Litestar:
    """`auth`: who may do what (default: loopback clients are admin, no token keys)."""
    return Litestar(
        route_handlers=[list_meshes, get_mesh, put_mesh, delete_mesh, list_resources,
                        get_resource, put_resource, delete_resource, ready, quarantine,
                        metrics, swap_read_models, projectors, *INSPECT_ROUTES,
                        *_GENERATOR_ROUTES, *_INGRESS_ROUTES, *TOKEN_ROUTES, *ZONE_ROUTES],
        state=app_state(ApiState(commands, store, projection_wait_s, inspector=inspector,
                                 auth=auth or ApiAuth(), sources=sources)),
        guards=[guard(_auth_context)],
        exception_handlers={Exception: _on_error},
        # a span per request, only in a process with tracing (README, Tracing)
        middleware=[RequestTracing] if tracer() is not None else [],
        # what a document may be (events.documents), read into memory at most
        request_max_body_size=MAX_DOCUMENT_BYTES,
        openapi_config=OpenAPIConfig(title="meshlog", version="0.1.0",
                                     description="Kuma-style resource API of meshlog"),
        debug=False,
        logging_config=None,
    )
