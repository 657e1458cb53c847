"""Reading resources for the routes of every kind: one (with its `ETag`) or a list page
(`?size=&offset=`, Kuma's `filter[labels.K]=V`), from the read models (on global, the zones'
Dataplanes too: `services.api._synced`), with the connected proxies' insight added to
Dataplanes."""

from __future__ import annotations

from typing import Any

from litestar import Response

from events import InvalidResource, NotFound, Violation
from projections import (
    DataplaneRow,
    HostnameGeneratorRow,
    MeshMultiZoneServiceRow,
    MeshRow,
    MeshServiceRow,
    PolicyRow,
    ZoneIngressRow,
    decode_row,
)
from services.api._state import ApiRequest, api_state
from services.api._synced import collections_of, labels_of
from services.api.proxy_inspector import add_connected
from services.render import render_row

__all__ = ["generated", "get_one", "list_page"]

_MAX_PAGE = 1000


async def get_one(request: ApiRequest, kind: str, key: str, name: str) -> Response[dict[str, Any]]:
    """The resource of `kind` at `key` with its `ETag`; `name` is what a 404 says."""
    state = api_state(request.app)
    for collection in collections_of(request, kind):
        body = await state.store.get(collection, key)
        if body is not None:
            row = decode_row(collection, body)
            break
    else:
        raise NotFound(f"{kind} {name!r} not found")
    headers = {}
    version = _version_of(row)
    if version is not None and not generated(row):
        # a generated row's version is not its subject's sequence
        headers["ETag"] = f'"{version}"'
    doc = render_row(row)
    await add_connected(request, [row], [doc])
    return Response(doc, headers=headers)


def _version_of(row: object) -> int | None:
    """The resource's version (the sequence of the event that last changed it)."""
    match row:
        case (MeshRow(meta=meta) | DataplaneRow(meta=meta) | HostnameGeneratorRow(meta=meta)
              | MeshServiceRow(meta=meta) | PolicyRow(meta=meta)
              | MeshMultiZoneServiceRow(meta=meta) | ZoneIngressRow(meta=meta)):
            return meta.version
        case _:
            return None


def generated(row: object) -> bool:
    """Made by the control plane: no version of the user's to lock on."""
    return ((isinstance(row, MeshServiceRow) and row.origin == "generated")
            or (isinstance(row, HostnameGeneratorRow) and row.origin == "default"))


async def list_page(request: ApiRequest, kind: str, prefix: str, size: int, offset: int
                    ) -> dict[str, Any]:
    """A page of the resources of `kind` whose keys start with `prefix`."""
    if not 1 <= size <= _MAX_PAGE or offset < 0:
        raise InvalidResource("query", [Violation(
            "size" if not 1 <= size <= _MAX_PAGE else "offset",
            f"size must be in 1..{_MAX_PAGE} and offset >= 0 (got size={size}, offset={offset})")])
    wanted = _label_filter(request)
    state = api_state(request.app)
    keyed = [(key, collection, body) for collection in collections_of(request, kind)
             for key, body in await state.store.scan(collection, prefix)]
    rows = [decode_row(collection, body) for _, collection, body in sorted(keyed)]
    if wanted:
        rows = [r for r in rows if all(labels_of(r).get(k) == v for k, v in wanted.items())]
    following = offset + size
    next_url = None
    if following < len(rows):
        base = str(request.base_url).rstrip("/")
        query = "".join(f"&filter[labels.{k}]={v}" for k, v in sorted(wanted.items()))
        next_url = f"{base}{request.url.path}?size={size}&offset={following}{query}"
    page = rows[offset:following]
    items = [render_row(r) for r in page]
    await add_connected(request, page, items)
    return {"total": len(rows), "items": items,
            "next": next_url}


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
