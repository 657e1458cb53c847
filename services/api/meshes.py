"""Routes of meshes and of the kinds that live in a mesh (`/meshes/{mesh}/{plural}`)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Response, delete, get, put

from events import Conflict, Mesh, MeshService, NotFound, Resource, deprecations
from projections import MANAGED_BY, MANAGED_BY_LABEL, MeshServiceRow, decode_row
from services.api._reads import generated, get_one, list_page
from services.api._state import ApiRequest, api_state
from services.api._synced import refuse_synced
from services.api._writes import applied, deleted, if_match_of, match_url, read_resource, write
from services.api.auth import ADMIN, require
from services.api.proxy_inspector import overviews
from services.render import GLOBAL_KINDS, PLURALS

__all__ = ["MESH_ROUTES"]


@get("/meshes", summary="List meshes")
async def list_meshes(request: ApiRequest, size: int = 100, offset: int = 0) -> dict[str, Any]:
    return await list_page(request, "Mesh", "", size, offset)


@get("/meshes/{mesh:str}", summary="Get a mesh")
async def get_mesh(request: ApiRequest, mesh: str) -> Response[dict[str, Any]]:
    return await get_one(request, "Mesh", mesh, mesh)


@get("/meshes/{mesh:str}/{plural:str}", summary="List resources of a mesh")
async def list_resources(request: ApiRequest, mesh: str, plural: str, size: int = 100,
                         offset: int = 0) -> dict[str, Any]:
    if plural == "dataplanes+insights":  # Kuma's list of DataplaneOverviews
        page = await list_page(request, "Dataplane", f"{mesh}/", size, offset)
        page["items"] = await overviews(request, mesh, page["items"])
        return page
    return await list_page(request, _kind(plural), f"{mesh}/", size, offset)


@get("/meshes/{mesh:str}/{plural:str}/{name:str}", summary="Get a resource")
async def get_resource(request: ApiRequest, mesh: str, plural: str, name: str
                       ) -> Response[dict[str, Any]]:
    return await get_one(request, _kind(plural), f"{mesh}/{name}", name)


@put("/meshes/{mesh:str}", summary="Create or update a mesh", status_code=200)
async def put_mesh(request: ApiRequest, mesh: str) -> Response[dict[str, Any]]:
    resource = await read_resource(request, "Mesh")
    match_url(resource, None, mesh)
    if isinstance(resource, Mesh):
        stored = await api_state(request.app).commands.stored_mesh(mesh)
        if resource.mtls != (stored.mtls if stored is not None else None):
            # every CA a Mesh lists is trusted by all its proxies: whoever adds one can mint
            # any identity of the mesh (Kuma keeps provided CA keys in admin-only Secrets)
            require(request.user, ADMIN, f"change the mTLS of mesh {mesh!r}")
    return await applied(request, resource)


@put("/meshes/{mesh:str}/{plural:str}/{name:str}", summary="Create or update a resource",
     status_code=200)
async def put_resource(request: ApiRequest, mesh: str, plural: str, name: str
                       ) -> Response[dict[str, Any]]:
    kind = _kind(plural)
    await refuse_synced(request, kind, mesh, name)
    resource = await read_resource(request, kind)
    match_url(resource, mesh, name)
    warnings = deprecations(resource)
    if isinstance(resource, MeshService) and resource.labels.get(MANAGED_BY_LABEL) == MANAGED_BY:
        row = await _generated_row(request, mesh, name)
        if (row is not None and if_match_of(request) is None
                and (resource.spec, resource.labels) == (row.spec, row.labels)):
            # what a GET of a generated MeshService returned, applied back: the generator
            # keeps it, as Kuma's does (its label says so); nothing is appended
            return Response({"version": row.meta.version, "created": False, "unchanged": True})
        resource, warning = _taken_over(resource)
        warnings.append(warning)
    return await applied(request, resource, warnings=warnings)


async def _generated_row(request: ApiRequest, mesh: str, name: str) -> MeshServiceRow | None:
    body = await api_state(request.app).store.get("meshservice", f"{mesh}/{name}")
    row = decode_row("meshservice", body) if body is not None else None
    return row if isinstance(row, MeshServiceRow) and generated(row) else None


def _taken_over(resource: MeshService) -> tuple[Resource, str]:
    """A MeshService the user applies, without the label only the generator sets: stored with
    it, the MeshService would be the user's and still be listed as generated."""
    labels = {k: v for k, v in resource.labels.items() if k != MANAGED_BY_LABEL}
    return (msgspec.structs.replace(resource, labels=labels),
            f"label {MANAGED_BY_LABEL}={MANAGED_BY} dropped: only the control plane's "
            f"generator sets it, and MeshService {resource.name!r} as applied is the user's "
            "(apply what a GET returned, unchanged, to leave a generated one to the generator)")


@delete("/meshes/{mesh:str}", summary="Delete a mesh", status_code=200)
async def delete_mesh(request: ApiRequest, mesh: str) -> Response[dict[str, Any]]:
    return await deleted(request, "Mesh", None, mesh)


@delete("/meshes/{mesh:str}/{plural:str}/{name:str}", summary="Delete a resource",
        status_code=200)
async def delete_resource(request: ApiRequest, mesh: str, plural: str, name: str
                          ) -> Response[dict[str, Any]]:
    kind, state = _kind(plural), api_state(request.app)
    await refuse_synced(request, kind, mesh, name)
    try:
        result = await state.commands.delete(kind, mesh, name, if_match=if_match_of(request))
    except NotFound:
        # The log has nothing to delete. A generated MeshService in its grace period (its
        # Dataplanes gone) is still shown, though: say why it cannot be deleted.
        body = await state.store.get("meshservice", f"{mesh}/{name}") if (
            kind == "MeshService") else None
        if body is not None and generated(decode_row("meshservice", body)):
            raise Conflict("meshservice", 0, f"MeshService {name!r} is generated from Dataplane "
                           "inbounds; it goes when its Dataplanes go (after the grace "
                           "period)") from None
        raise
    return await write(request, result)


def _kind(plural: str) -> str:
    kind = PLURALS.get(plural)
    if kind is None or kind in GLOBAL_KINDS:
        known = ", ".join(p for p, k in PLURALS.items() if k not in GLOBAL_KINDS)
        raise NotFound(f"unknown resource type {plural!r}; known: {known}")
    return kind


MESH_ROUTES = [list_meshes, get_mesh, put_mesh, delete_mesh, list_resources, get_resource,
               put_resource, delete_resource]
