"""Routes about the process itself: readiness, its metrics, the read-model swap and the
projectors' leadership (the quarantine: services.api.quarantine)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import get, post

from events import Conflict, NotFound
from projections import FoldVersions
from services.api._state import ApiRequest, api_state
from services.api.auth import ADMIN
from services.api.metrics import metrics

__all__ = ["OPERATION_ROUTES", "SwapRequest"]


@get("/ready", summary="Readiness: the read models answer")
async def ready(request: ApiRequest) -> dict[str, Any]:
    store = api_state(request.app).store
    quarantined = len(await store.scan("quarantine"))
    # read models of an older fold are served, and said to be (projections.foldversion)
    versions = FoldVersions(await store.fold_version())
    return {"status": "ready", "projectedSequence": await store.checkpoint(),
            "quarantinedEvents": quarantined, "foldVersion": versions.as_json()}


class SwapRequest(msgspec.Struct):
    database: str


@post("/_admin/read-models", summary="Swap to read models rebuilt by `meshlog replay`",
      status_code=200, opt={"access": ADMIN})
async def swap_read_models(request: ApiRequest, data: SwapRequest) -> dict[str, Any]:
    readmodels = api_state(request.app).readmodels
    if readmodels is None:
        raise Conflict("read-models", 0, "this API process does not own its read models "
                       "(only `meshlog up` swaps); restart the processes with --database")
    seq = await readmodels.swap(data.database)
    return {"database": data.database, "caughtUpTo": seq}


@get("/_admin/projectors", summary="Who leads among the projectors of `meshlog up "
     "--projectors N`", opt={"access": ADMIN})
async def projectors(request: ApiRequest) -> dict[str, Any]:
    status = api_state(request.app).projectors
    if status is None:
        raise NotFound("no projector lease here: this process runs one projector (meshlog up "
                       "--projectors 1) or none (meshlog api); a `meshlog projector` process "
                       "answers GET /ready on its --metrics-port")
    items = await status()
    return {"total": len(items), "items": items, "next": None}


OPERATION_ROUTES = [ready, metrics, swap_read_models, projectors]
