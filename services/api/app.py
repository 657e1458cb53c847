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
    GET    /zoneingresses+insights[/{name}]      ZoneIngressOverviews: each with its Envoy's
                                                  insight (connected, gateway, xDS counters)
    GET    /meshes/{mesh}/{policy plural}[/{name}]  policies, as in Kuma; PUT, DELETE: every
                                          kind of `events.policy_kinds` (meshtrafficpermissions,
                                          meshtimeouts, meshretries, ...) through one path
    GET    /meshes/{mesh}/meshmultizoneservices[/{name}]    PUT and DELETE on global (or a
                                                            standalone control plane) only
    GET    /meshes/{mesh}/dataplanes/{name}/_overview   the Dataplane + its proxy's insight
    GET    /meshes/{mesh}/dataplanes+insights           a list page of those (Kuma's name)
    GET    /meshes/{mesh}/dataplanes/{name}/_config     its computed xDS (asked of a gateway)
    GET    /zones[/{name}[/_overview]], /zone-insights; PUT, DELETE /zones/{name} (global)
                                          services.api.zones
    GET    /ready                                 200 once the read models answer
    GET    /_quarantine                          events the projector could not apply, and
                                                  those skipped (services.api.quarantine)
    POST   /_quarantine/skips                    skip one no release can read (admin)
    GET    /metrics                               Prometheus metrics of every part of the process
    GET    /schema/openapi.json                  the OpenAPI document
    POST   /tokens/dataplane, /tokens/user       generate a token (services.api.tokens)
    POST   /tokens/{dataplane,user}/revocations  revoke one

Who may do what (services.api.auth): reads are open; writes need a user token (`Authorization:
Bearer`) or a loopback client (admin unless turned off); `_config`, tokens, skips and the
read-model swap need admin. A refusal is a 401 (with `WWW-Authenticate: Bearer`) or a 403.

Writes go to the log (`events.commands`); reads come from the read models. A write answers
once the projector has folded it (bounded wait), so a `get` right after an `apply` sees it.
A write's answer lists Kuma's deprecation `warnings` of the resource, if it has any.
Optimistic concurrency: GET returns `ETag: "<version>"`; a write with `If-Match` fails with
409 if the resource moved on. Errors are RFC 7807 documents; invalid input lists every
violation in `invalid_parameters` as `{"field", "reason"}`.

This module puts the app together; the routes live by concern: `meshes` (meshes and the
kinds in a mesh), `meshless` (hostname generators, zone ingresses), `operations` (readiness,
metrics, admin), `quarantine`, `proxy_inspector`, `tokens` and `zones`; reading and writing
any kind in `_reads` and `_writes`; errors as problem documents in `problems`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from litestar import Litestar
from litestar.openapi import OpenAPIConfig

from events.bus.sources import SourceState
from events.bus.trace_context import tracer
from events.commands import Commands
from events.documents import MAX_DOCUMENT_BYTES
from projections import ReadModelStore
from services.api._state import ApiState, api_state, app_state
from services.api.auth import ApiAuth, guard
from services.api.meshes import MESH_ROUTES
from services.api.meshless import GENERATOR_ROUTES, INGRESS_ROUTES
from services.api.operations import OPERATION_ROUTES
from services.api.problems import on_error
from services.api.proxy_inspector import INSPECT_ROUTES, ProxyInspector
from services.api.quarantine import QUARANTINE_ROUTES
from services.api.tokens import TOKEN_ROUTES
from services.api.tracing import RequestTracing
from services.api.zones import ZONE_ROUTES

__all__ = ["ApiState", "api_state", "create_app"]


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
        route_handlers=[*MESH_ROUTES, *OPERATION_ROUTES, *QUARANTINE_ROUTES, *INSPECT_ROUTES,
                        *GENERATOR_ROUTES, *INGRESS_ROUTES, *TOKEN_ROUTES, *ZONE_ROUTES],
        state=app_state(ApiState(commands, store, projection_wait_s, inspector=inspector,
                                 auth=auth or ApiAuth(), sources=sources)),
        guards=[guard(_auth_context)],
        exception_handlers={Exception: on_error},
        # a span per request, only in a process with tracing (README, Tracing)
        middleware=[RequestTracing] if tracer() is not None else [],
        # what a document may be (events.documents), read into memory at most
        request_max_body_size=MAX_DOCUMENT_BYTES,
        openapi_config=OpenAPIConfig(title="meshlog", version="0.1.0",
                                     description="Kuma-style resource API of meshlog"),
        debug=False,
        logging_config=None,
    )
