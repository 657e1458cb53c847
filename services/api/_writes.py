"""Writing resources for the routes of every kind: the request's document decoded and
checked against its URL, `If-Match` and `Idempotency-Key`, and the answer once the
projector has folded the write."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Response

from events import InvalidResource, Resource, Violation, decode_resource
from events.commands import WriteResult
from events.documents import load_json, load_yaml
from events.resources import MeshScopedResource
from services.api._state import ApiRequest, api_state, await_projection

__all__ = ["applied", "deleted", "idempotency_key_of", "if_match_of", "match_url",
           "read_resource", "write"]


async def write(request: ApiRequest, result: WriteResult, *,
                warnings: list[str] | None = None) -> Response[dict[str, Any]]:
    projected = await await_projection(api_state(request.app), result.seq)
    headers = {"ETag": f'"{result.seq}"'}
    if not projected:
        headers["Meshlog-Projection"] = "pending"
    body: dict[str, Any] = {"version": result.seq, "created": result.created,
                            "unchanged": result.unchanged}
    if warnings:  # Kuma's CreateOrUpdateSuccessResponse
        body["warnings"] = warnings
    return Response(body, status_code=201 if result.created else 200, headers=headers)


async def applied(request: ApiRequest, resource: Resource, *,
                  warnings: list[str] | None = None) -> Response[dict[str, Any]]:
    """Apply `resource` with the request's `If-Match` and `Idempotency-Key`; its answer."""
    return await write(request, await api_state(request.app).commands.apply(
        resource, if_match=if_match_of(request), idempotency_key=idempotency_key_of(request)),
        warnings=warnings)


async def deleted(request: ApiRequest, kind: str, mesh: str | None, name: str
                  ) -> Response[dict[str, Any]]:
    """Delete the resource with the request's `If-Match`; its answer."""
    return await write(request, await api_state(request.app).commands.delete(
        kind, mesh, name, if_match=if_match_of(request)))


async def read_resource(request: ApiRequest, kind: str) -> Resource:
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


def match_url(resource: Resource, mesh: str | None, name: str) -> None:
    violations = []
    if resource.name != name:
        violations.append(Violation("name", f"{resource.name!r} does not match the URL's {name!r}"))
    # `mesh` is given for the mesh-scoped kinds only (`_kind` refuses the global ones)
    if mesh is not None and isinstance(resource, MeshScopedResource) and resource.mesh != mesh:
        violations.append(Violation("mesh", f"{resource.mesh!r} does not match the URL's {mesh!r}"))
    if violations:
        raise InvalidResource(type(resource).__name__, violations)


def if_match_of(request: ApiRequest) -> int | None:
    value = request.headers.get("if-match")
    if value is None:
        return None
    try:
        return int(value.strip().strip('"'))
    except ValueError:
        raise InvalidResource("request", [Violation(
            "If-Match", f"{value!r} is not a version (use the ETag of a GET)")]) from None


def idempotency_key_of(request: ApiRequest) -> str | None:
    return request.headers.get("idempotency-key")
