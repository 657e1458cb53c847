"""Token routes, admin only (services.api.auth), in Kuma's shape where Kuma has one:

    POST /tokens/dataplane   {"name", "mesh", "tags": {key: [values]}, "type", "workload",
                              "validFor"}                                          -> the token
    POST /tokens/zone        {"zone", "scope": ["ingress"], "validFor"}             -> the token
    POST /tokens/user        {"name", "groups": [...], "validFor"}                  -> the token
    POST /tokens/dataplane/revocations   {"mesh", "jti", "expiresAt"}   revoke a dataplane token
    POST /tokens/zone/revocations        {"jti", "expiresAt"}           revoke a zone token
    POST /tokens/user/revocations        {"jti", "expiresAt"}           revoke a user token

Signing keys (Kuma's `<purpose>-signing-key-[<mesh>-]<serial>` secrets), `KIND` one of
`dataplane`, `zone`, `user`:

    GET    /tokens/KIND/signing-keys[?mesh=M]      the keys in service (public halves)
    POST   /tokens/KIND/signing-keys  {"mesh"}     rotate: the next serial signs from now on
    DELETE /tokens/KIND/signing-keys/N[?mesh=M]    retire serial N: every token it signed is
                                                   refused (409 for the newest serial)

`mesh` is for dataplane-token keys only (default `default`; a list without it shows every
mesh's). A rotation or retirement answers once the read models hold it, so the next request
with a token of a retired key is refused; rotating or retiring a user-token key also renews
the data dir's admin token, before the answer, when it was signed with another key than the
newest (every API process renews its own when it sees the rotation in the log:
`services.runtime.admin_token`). A zone lists global's zone-token keys too (`"issuer":
"global"`, `signs: false` there: they sign on global); rotating or retiring acts on this
control plane's own keys (global's on global's API). A zone signs no zone tokens and rotates
no zone-token key (409 naming global's command, as Kuma's zone control plane generates none);
a zone-token key it made with an earlier release is listed with `signs: false` and may be
retired.

A dataplane token's `name` may be empty or left out (Kuma's token for any Dataplane of the
mesh that its `tags` and `workload` allow, e.g. every replica of a service; with neither,
for every Dataplane of the mesh); `workload` is the value the Dataplane's `kuma.io/workload`
label must have. A token comes back as `text/plain`, as Kuma answers. `validFor` is a Go
duration (`24h`, `1h30m`; default 24h, at most 87600h); a zone token's `scope` defaults
to `["ingress"]`; on global its zone must be one registered there (Kuma's way: global's
`zone-token` key reaches every zone, kid `_global/zone-token/_/<serial>`), on a standalone
control plane its own zone;
a zone of a multi-zone deployment signs none (409: they are issued by global); `expiresAt`
is the token's `exp` (Unix seconds), after which its revocation says nothing more: the fold
drops it an hour later (`REVOCATION_KEPT_AFTER_EXPIRY_MS`; omitted: kept for ever). A
revocation answers once the read models hold it, so the revoked token is refused from the next
request on; gateways end the xDS streams that use it.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Response, delete, get, post
from msgspec import Struct

from events import InvalidResource, Violation, is_resource_name, now_ms, rfc3339
from events.commands import TokenCommands, signs_here
from events.documents import load_json
from events.errors import Conflict, NotFound
from events.event_types import TokenPurpose
from events.identity import (
    DATAPLANE_TOKEN,
    DEFAULT_VALID_FOR_S,
    USER_TOKEN,
    ZONE_TOKEN,
    dataplane_token_holders,
    key_id,
    parse_key_id,
    parse_valid_for,
)
from events.subjects import GLOBAL_ZONE
from projections import SigningKeyRow, decode_typed
from services.api._state import ApiRequest, api_state, await_projection
from services.api.auth import ADMIN

__all__ = ["TOKEN_ROUTES"]

log = logging.getLogger("meshlog.api.tokens")

_ADMIN_ONLY = {"access": ADMIN}
_TEXT = "text/plain; charset=utf-8"


class _DataplaneTokenRequest(Struct, frozen=True):
    name: str
    """"": any Dataplane the tags and workload allow."""
    mesh: str
    tags: dict[str, list[str]]
    workload: str
    valid_for_s: int


class _UserTokenRequest(Struct, frozen=True):
    name: str
    groups: list[str]
    valid_for_s: int


class _Revocation(Struct, frozen=True):
    mesh: str | None
    jti: str
    expires_at_ms: int


@post("/tokens/dataplane", opt=_ADMIN_ONLY, status_code=200, media_type=_TEXT,
      summary="Generate a dataplane token (admin)")
async def generate_dataplane_token(request: ApiRequest) -> Response[str]:
    what = "dataplane token request"
    doc = await _object(request, what)
    out: list[Violation] = []
    _known(doc, {"name", "mesh", "tags", "type", "workload", "validFor"}, out)
    kind = doc.get("type", "dataplane")
    if kind not in ("dataplane", ""):
        out.append(Violation("type", f"{kind!r}: meshlog makes 'dataplane' tokens only"))
    req = _DataplaneTokenRequest(
        name=_name(doc, "name", out, default="", optional=True),
        mesh=_name(doc, "mesh", out, default="default"), tags=_tags(doc.get("tags", {}), out),
        workload=_workload(doc.get("workload", ""), out), valid_for_s=_valid_for(doc, out))
    if out:
        raise InvalidResource(what, out)
    token, claims = await _tokens(request).issue_dataplane_token(
        mesh=req.mesh, name=req.name, tags=req.tags, workload=req.workload,
        valid_for_s=req.valid_for_s, now_ms=now_ms())
    log.info("%s generated dataplane token %s for %s, valid until %s", request.user,
             claims.jti, dataplane_token_holders(claims), rfc3339(claims.exp * 1000))
    return Response(token, media_type=_TEXT)


@post("/tokens/zone", opt=_ADMIN_ONLY, status_code=200, media_type=_TEXT,
      summary="Generate a zone token for a zone's ingresses (admin; on global: any registered "
              "zone; a zone of a multi-zone deployment refuses: global issues them)")
async def generate_zone_token(request: ApiRequest) -> Response[str]:
    what = "zone token request"
    doc = await _object(request, what)
    out: list[Violation] = []
    _known(doc, {"zone", "scope", "validFor"}, out)
    zone = doc.get("zone")
    if not isinstance(zone, str) or not is_resource_name(zone):
        out.append(Violation("zone", "is required" if zone is None else
                             f"{zone!r} is not a zone name"))
    scope = _strings(doc.get("scope", ["ingress"]), "scope", out)
    valid_for_s = _valid_for(doc, out)
    if out:
        raise InvalidResource(what, out)
    token, claims = await _tokens(request).issue_zone_token(
        zone=str(zone), scope=scope, valid_for_s=valid_for_s, now_ms=now_ms())
    log.info("%s generated zone token %s for zone %s (scope %s), valid until %s",
             request.user, claims.jti, claims.zone, claims.scope, rfc3339(claims.exp * 1000))
    return Response(token, media_type=_TEXT)


@post("/tokens/user", opt=_ADMIN_ONLY, status_code=200, media_type=_TEXT,
      summary="Generate a user token (admin)")
async def generate_user_token(request: ApiRequest) -> Response[str]:
    what = "user token request"
    doc = await _object(request, what)
    out: list[Violation] = []
    _known(doc, {"name", "groups", "validFor"}, out)
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        out.append(Violation("name", f"{name!r} is not a user name (a non-empty string)"))
    req = _UserTokenRequest(name=name if isinstance(name, str) else "",
                            groups=_strings(doc.get("groups", []), "groups", out),
                            valid_for_s=_valid_for(doc, out))
    if out:
        raise InvalidResource(what, out)
    token, claims = await _tokens(request).issue_user_token(
        name=req.name, groups=req.groups, valid_for_s=req.valid_for_s, now_ms=now_ms())
    log.info("%s generated user token %s for %r (groups %s), valid until %s", request.user,
             claims.jti, req.name, req.groups, rfc3339(claims.exp * 1000))
    return Response(token, media_type=_TEXT)


@post("/tokens/dataplane/revocations", opt=_ADMIN_ONLY, status_code=200,
      summary="Revoke a dataplane token (admin): its xDS streams end")
async def revoke_dataplane_token(request: ApiRequest) -> Response[dict[str, Any]]:
    doc = await _object(request, "revocation")
    out: list[Violation] = []
    _known(doc, {"mesh", "jti", "expiresAt"}, out)
    revocation = _Revocation(mesh=_name(doc, "mesh", out, default="default"),
                             jti=_jti(doc, out), expires_at_ms=_expires_at(doc, out))
    if out:
        raise InvalidResource("revocation", out)
    return await _revoke(request, DATAPLANE_TOKEN, revocation)


async def _meshless_revocation(request: ApiRequest) -> _Revocation:
    """The revocation of a token that belongs to no mesh (a zone's or a user's)."""
    doc = await _object(request, "revocation")
    out: list[Violation] = []
    _known(doc, {"jti", "expiresAt"}, out)
    revocation = _Revocation(mesh=None, jti=_jti(doc, out), expires_at_ms=_expires_at(doc, out))
    if out:
        raise InvalidResource("revocation", out)
    return revocation


@post("/tokens/zone/revocations", opt=_ADMIN_ONLY, status_code=200,
      summary="Revoke a zone token (admin): its ingresses' xDS streams end")
async def revoke_zone_token(request: ApiRequest) -> Response[dict[str, Any]]:
    return await _revoke(request, ZONE_TOKEN, await _meshless_revocation(request))


@post("/tokens/user/revocations", opt=_ADMIN_ONLY, status_code=200,
      summary="Revoke a user token (admin)")
async def revoke_user_token(request: ApiRequest) -> Response[dict[str, Any]]:
    return await _revoke(request, USER_TOKEN, await _meshless_revocation(request))


def _issuer(kid: str) -> str | None:
    """Whose key `kid` is when it names its control plane (global's zone-token keys)."""
    parsed = parse_key_id(kid)
    return parsed.issuer if parsed is not None else None


_PURPOSES: dict[str, TokenPurpose] = {"dataplane": DATAPLANE_TOKEN, "zone": ZONE_TOKEN,
                                      "user": USER_TOKEN}


@get("/tokens/{kind:str}/signing-keys", opt=_ADMIN_ONLY,
     summary="List the signing keys in service (admin): dataplane, zone or user")
async def list_signing_keys(request: ApiRequest, kind: str) -> dict[str, Any]:
    purpose = _purpose(kind)
    mesh = request.query_params.get("mesh") if purpose == DATAPLANE_TOKEN else None
    state = api_state(request.app)
    # `_` takes `_/` (this control plane's) and `_global/` (global's zone-token keys)
    prefix = "_" if purpose != DATAPLANE_TOKEN else f"{mesh}/" if mesh else ""
    rows = [decode_typed(SigningKeyRow, body)
            for _, body in await state.store.scan("signingkey", prefix)]
    issuers = {r.kid: _issuer(r.kid) for r in rows}
    rows = sorted((r for r in rows if r.purpose == purpose),
                  key=lambda r: (issuers[r.kid] or "", r.mesh or "", r.serial))
    newest = {}
    for row in rows:  # the highest serial of each (issuer, mesh) signs (never retired)
        newest[(issuers[row.kid], row.mesh)] = row.serial
    mine = key_id(purpose, None, 1, zone=state.commands.zone).issuer  # whose keys sign here
    # a zone signs no zone tokens (global does): a key it made with an earlier release
    # only verifies the tokens it signed then
    signing = signs_here(purpose, state.commands.deployment)
    items = [{"kid": r.kid, "purpose": r.purpose, "mesh": r.mesh, "serial": r.serial,
              "createdAt": rfc3339(r.created_at),
              "signs": signing and issuers[r.kid] == mine
              and newest[(mine, r.mesh)] == r.serial,
              **({"issuer": "global"} if issuers[r.kid] == GLOBAL_ZONE else {})}
             for r in rows]
    return {"total": len(items), "items": items}


@post("/tokens/{kind:str}/signing-keys", opt=_ADMIN_ONLY, status_code=201,
      summary="Rotate a signing key (admin): the next serial signs new tokens")
async def rotate_signing_key(request: ApiRequest, kind: str) -> Response[dict[str, Any]]:
    purpose = _purpose(kind)
    what = "signing key rotation"
    doc = await _object(request, what)
    out: list[Violation] = []
    mesh = None
    if purpose == DATAPLANE_TOKEN:
        _known(doc, {"mesh"}, out)
        mesh = _name(doc, "mesh", out, default="default")
    else:
        _known(doc, set(), out)
    if out:
        raise InvalidResource(what, out)
    rotated = await _tokens(request).rotate_signing_key(purpose, mesh, now_ms())
    if rotated.appended:
        log.info("%s rotated the %s signing key%s: %s signs from now on", request.user,
                 purpose, f" of mesh {mesh}" if mesh else "", rotated.kid)
    return await _key_changed(request, purpose, {
        "kid": str(rotated.kid), "purpose": purpose, "mesh": mesh,
        "serial": rotated.kid.serial}, rotated.seq, rotated.appended,
        201 if rotated.appended else 200)


@delete("/tokens/{kind:str}/signing-keys/{serial:str}", opt=_ADMIN_ONLY, status_code=200,
        summary="Retire a signing key (admin): every token it signed is refused")
async def retire_signing_key(request: ApiRequest, kind: str, serial: str
                             ) -> Response[dict[str, Any]]:
    purpose = _purpose(kind)
    out: list[Violation] = []
    mesh = request.query_params.get("mesh", "default") if purpose == DATAPLANE_TOKEN else None
    if mesh is not None and not is_resource_name(mesh):
        out.append(Violation("mesh", f"{mesh!r} is not a mesh name"))
    if not serial.isascii() or not serial.isdigit() or int(serial) < 1:
        out.append(Violation("serial", f"{serial!r} is not a key serial (1, 2, ...)"))
    if out:
        raise InvalidResource("signing key retirement", out)
    number = int(serial)
    seq, appended = await _tokens(request).retire_signing_key(purpose, mesh, number, now_ms())
    kid = str(key_id(purpose, mesh, number, zone=api_state(request.app).commands.zone))
    if appended:
        log.info("%s retired the signing key %s", request.user, kid)
    return await _key_changed(request, purpose, {
        "kid": kid, "purpose": purpose, "mesh": mesh, "serial": number}, seq, appended, 200)


TOKEN_ROUTES = [generate_dataplane_token, generate_zone_token, generate_user_token,
                revoke_dataplane_token, revoke_zone_token, revoke_user_token,
                list_signing_keys, rotate_signing_key, retire_signing_key]


def _purpose(kind: str) -> TokenPurpose:
    purpose = _PURPOSES.get(kind)
    if purpose is None:
        raise NotFound(f"no tokens of kind {kind!r} (one of {', '.join(_PURPOSES)})")
    return purpose


async def _key_changed(request: ApiRequest, purpose: TokenPurpose, body: dict[str, Any],
                       seq: int, appended: bool, status: int) -> Response[dict[str, Any]]:
    """The answer to a rotation or retirement, once the read models hold it; a user-token
    key's also renews the admin token of this API's data dir."""
    state = api_state(request.app)
    projected = await await_projection(state, seq)
    if purpose == USER_TOKEN and state.auth.admin_token is not None:
        await state.auth.admin_token.renew()  # its watch of the log would too, a moment later
    headers = {} if projected else {"Meshlog-Projection": "pending"}
    return Response({**body, "version": seq, "unchanged": not appended},
                    status_code=status, headers=headers)


async def _revoke(request: ApiRequest, purpose: TokenPurpose, revocation: _Revocation
                  ) -> Response[dict[str, Any]]:
    seq, appended = await _tokens(request).revoke(
        purpose, revocation.mesh, revocation.jti, expires_at_ms=revocation.expires_at_ms,
        at=now_ms())
    if appended:
        log.info("%s revoked %s %s", request.user, purpose, revocation.jti)
    projected = await await_projection(api_state(request.app), seq)
    headers = {} if projected else {"Meshlog-Projection": "pending"}
    return Response({"jti": revocation.jti, "version": seq, "unchanged": not appended},
                    status_code=201 if appended else 200, headers=headers)


def _tokens(request: ApiRequest) -> TokenCommands:
    tokens = api_state(request.app).auth.tokens
    if tokens is None:
        raise Conflict("tokens", 0, "this API process has no secret key, so it cannot sign "
                       "or revoke tokens: start it with --secret-key-file")
    return tokens


# --- the request documents: every violation with its field -----------------------------------


async def _object(request: ApiRequest, what: str) -> dict[str, Any]:
    raw = await request.body()
    doc = load_json(raw, "the body", invalid="is not valid JSON") if raw.strip() else {}
    if not isinstance(doc, dict):
        raise InvalidResource(what, [Violation("", f"expected an object, got "
                                                   f"{type(doc).__name__}")])
    return doc


def _known(doc: dict[str, Any], fields: set[str], out: list[Violation]) -> None:
    for key in sorted(set(doc) - fields):
        out.append(Violation(key, f"unknown field (expected {', '.join(sorted(fields))})"))


_WHAT = {"name": "Dataplane", "mesh": "mesh"}


def _name(doc: dict[str, Any], field: str, out: list[Violation], *,
          default: str | None = None, optional: bool = False) -> str:
    """The name in `field`; with `optional`, "" (or null, or no field) is no name."""
    value = doc.get(field, default)
    if optional and value in ("", None):
        return ""
    if not isinstance(value, str) or not is_resource_name(value):
        out.append(Violation(field, f"{value!r} is not a {_WHAT[field]} name (lower-case "
                                    "letters, digits, '-' and '.')" if value is not None
                             else "is required"))
        return ""
    return value


def _strings(value: Any, path: str, out: list[Violation]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        out.append(Violation(path, f"{value!r} is not a list of non-empty strings"))
        return []
    return value


def _tags(value: Any, out: list[Violation]) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        out.append(Violation("tags", f"expected an object of tag: [values], got {value!r}"))
        return {}
    tags = {}
    for key, values in sorted(value.items()):
        tags[key] = _strings(values, f"tags[{key!r}]", out)
        if isinstance(values, list) and not values:
            out.append(Violation(f"tags[{key!r}]", "lists no value"))
    return tags


def _workload(value: Any, out: list[Violation]) -> str:
    """A `kuma.io/workload` label value, or "" (any workload)."""
    if value is None or value == "":
        return ""
    if (not isinstance(value, str) or len(value) > _MAX_LABEL_VALUE
            or any(c.isspace() or not c.isprintable() for c in value)):
        out.append(Violation("workload", f"{value!r} is not a label value (the Dataplane's "
                                         f"kuma.io/workload: up to {_MAX_LABEL_VALUE} "
                                         "characters, no spaces)"))
        return ""
    return value


_MAX_LABEL_VALUE = 253


def _valid_for(doc: dict[str, Any], out: list[Violation]) -> int:
    value = doc.get("validFor")
    if value is None or value == "":
        return DEFAULT_VALID_FOR_S
    if not isinstance(value, str):
        out.append(Violation("validFor", f"{value!r} is not a duration such as 24h"))
        return 0
    try:
        return parse_valid_for(value)
    except ValueError as exc:
        out.append(Violation("validFor", str(exc)))
        return 0


def _jti(doc: dict[str, Any], out: list[Violation]) -> str:
    value = doc.get("jti")
    if not isinstance(value, str) or not value:
        out.append(Violation("jti", "is required: the token's id (its `jti` claim)"))
        return ""
    return value


def _expires_at(doc: dict[str, Any], out: list[Violation]) -> int:
    value = doc.get("expiresAt", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        out.append(Violation("expiresAt", f"{value!r} is not a time in Unix seconds (the "
                                          "token's `exp` claim)"))
        return 0
    return value * 1000
