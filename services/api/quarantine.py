"""The quarantine: events the projector could not decode or apply, and operators' skips.

    GET  /_quarantine          {"total", "items", "next", "skipped"}: the quarantined events
                               (the projector stopped in front of the first) and the events
                               skipped by decision (`skipped` rows)
    POST /_quarantine/skips    {"seq", "reason"} (admin): fold the event at `seq` as nothing

A skip appends `SequenceSkipped` (events.commands.skips) for an event that is quarantined or
that this code cannot decode; it answers `201` once the read models have passed it (the halted
projector notices the decision by itself within a second, `projections.worker.SKIP_POLL_S`;
otherwise `Meshlog-Projection: pending`), `200` if it was decided before, `409` for an event
that folds (naming its sequence), `404` for a sequence the log does not hold, `400` for a bad
body (every field named).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Response, get, post

from events import InvalidResource, Violation, now_ms
from events.documents import load_json
from projections import QuarantinedEvent, decode_typed
from services.api._state import ApiRequest, api_state, await_projection
from services.api.auth import ADMIN

__all__ = ["QUARANTINE_ROUTES"]

log = logging.getLogger("meshlog.api.quarantine")

MAX_REASON = 1000
"""The longest reason a skip records, in characters."""
_FIELDS = ("reason", "seq")


@get("/_quarantine", summary="Events the projector could not apply (it stopped at the first), "
     "and those skipped by an operator's decision")
async def quarantine(request: ApiRequest) -> dict[str, Any]:
    store = api_state(request.app).store
    items = [msgspec.json.decode(body) for _, body in await store.scan("quarantine")]
    skipped = [msgspec.json.decode(body) for _, body in await store.scan("skipped")]
    return {"total": len(items), "items": items, "next": None, "skipped": skipped}


@post("/_quarantine/skips", opt={"access": ADMIN}, status_code=201,
      summary="Skip an event no release can read (admin): the projector folds it as nothing")
async def skip(request: ApiRequest) -> Response[dict[str, Any]]:
    seq, reason = _skip_request(load_json(await request.body() or b"{}"))
    state = api_state(request.app)
    quarantined = any(decode_typed(QuarantinedEvent, body).seq == seq
                      for _, body in await state.store.scan("quarantine"))
    skipped = await state.commands.skips.skip(seq, reason=reason, by=request.user.name,
                                              at=now_ms(), quarantined=quarantined)
    if skipped.appended:
        log.warning("%s skipped sequence %d (%s), decision at sequence %d: %r", request.user,
                    seq, skipped.subject, skipped.decision_seq, reason)
    projected = await await_projection(state, skipped.decision_seq)
    return Response({"seq": seq, "subject": skipped.subject, "version": skipped.decision_seq,
                     "unchanged": not skipped.appended},
                    status_code=201 if skipped.appended else 200,
                    headers={} if projected else {"Meshlog-Projection": "pending"})


def _skip_request(doc: object) -> tuple[int, str]:
    if not isinstance(doc, dict):
        raise InvalidResource("skip", [Violation("", f"expected an object, got "
                                                     f"{type(doc).__name__}")])
    out = [Violation(key, f"unknown field (expected {', '.join(_FIELDS)})")
           for key in sorted(set(doc) - set(_FIELDS))]
    seq = doc.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        out.append(Violation("seq", "is required: the stream sequence of the quarantined "
                                    "event (meshlog quarantine)" if seq is None else
                             f"{seq!r} is not a stream sequence (1, 2, ...)"))
        seq = 0
    reason = doc.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        out.append(Violation("reason", "is required: why the event is skipped (it is kept in "
                                       "the log with the decision)" if reason is None else
                             f"{reason!r} is not a non-empty text"))
        reason = ""
    elif len(reason) > MAX_REASON:
        out.append(Violation("reason", f"has {len(reason)} characters, more than "
                                       f"{MAX_REASON}"))
    if out:
        raise InvalidResource("skip", out)
    return seq, reason.strip()


QUARANTINE_ROUTES = [quarantine, skip]
