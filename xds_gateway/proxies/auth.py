"""Proxy authentication on xDS: `DataplaneAuthentication`, a `StreamCallbacks` (Kuma's
`pkg/xds/auth`), first in the gateway's chain: nothing else (insight, self-registration, SDS)
happens for a stream it refuses.

On open (ADS, SotW or Delta, and HDS):

- exactly one `authorization` metadata value: the token itself (Envoy's `initial_metadata`,
  as kuma-dp and `meshlog dataplane bootstrap --token-file` write it) or `Bearer <token>` (gRPC
  call credentials, gRFC A97);
- a dataplane-token kid, whose public key the gateway's view holds (projected from the log:
  a gateway never holds a private key), an ES256 signature, claims of a dataplane token, valid
  now (nbf..exp), not revoked;
- for a zone ingress (node `_zoneingress.<name>`): a zone-token kid instead, claims of a zone
  token (Kuma's `{Zone, Scope}`) whose `Zone` is the gateway's own and whose `Scope` holds
  `ingress`, signed with global's zone-token key (kid `_global/zone-token/_/<serial>`, which
  reaches the zone's view through the sync; Kuma's way) or with the zone's own (`zone-token/
  _/<serial>`, a zone token its own API made); a dataplane token opens no ingress stream, a
  zone token no sidecar stream;
- for a sidecar: the token allows the node's Dataplane (`<mesh>.<name>`, as the ADS stream
  reads node.id) by Kuma's rule (`token_scope`): its `Mesh` is the node's; its `Name`, if
  any, too; its `Tags`, if any, are on the Dataplane (each tag present, each of the
  Dataplane's values of it allowed); its `Workload`, if any, is the Dataplane's
  `kuma.io/workload` label. A token naming no Dataplane (Kuma's token for every replica of a
  service, or for the whole mesh) opens streams only for a Dataplane that exists. The
  Dataplane is the one the node carries to register itself and the one registered under its
  name, each that exists (Kuma checks only the carried one): a proxy registers itself only
  with a token that allows it, and cannot take over another service's Dataplane by carrying
  one of the same name.
  Either is checked as the fold makes it: its inbounds with tags carry the `kuma.io/zone` tag
  of the zone that registers it (`projections.zone_tagged`), this gateway's for the node's
  Dataplane (whatever value the node gave), so a token requiring `kuma.io/zone: <this zone>`
  opens a self-registering proxy's stream and one requiring another zone does not.

Refusals: UNAUTHENTICATED when the proxy is not authenticated (no token, an unusable one,
expired, revoked), PERMISSION_DENIED for a valid token of another proxy. Messages say what is
wrong and never repeat the token. Each refusal, and each stream ended for its token while it
lives, counts once in `meshlog_xds_token_refusals_total{reason}` (`XdsRefusal`: a word, never
the token, its proxy or its mesh, so the series stay few).

While the stream lives (Kuma checks once per stream, so an expired or revoked token stays
connected: kuma#3379):

- a timer at the token's `exp` ends the stream UNAUTHENTICATED;
- a revocation of its `jti` arriving in the view ends it at once (`ProjectionView.on_revoked`);
- so does the retirement of the signing key that signed it (`ProjectionView.on_key_retired`:
  the key's row goes, and with it every token of its kid, Kuma's deleted signing key), or
  the deletion of its Mesh, which takes the mesh's keys with it;
- a request naming another node ends it PERMISSION_DENIED (Kuma: the node id cannot change
  once the stream is authenticated).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Final, Literal, TypeVar, get_args

import grpc
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.config.core.v3.base_pb2 import Node
from envoy.service.health.v3.hds_pb2 import HealthCheckRequestOrEndpointHealthResponse
from msgspec import Struct
from prometheus_client import Counter

from events import DEFAULT_ZONE, GLOBAL_ZONE, Dataplane, Provenance, rfc3339
from events.identity import (
    DATAPLANE_TOKEN,
    ZONE_TOKEN,
    DataplaneClaims,
    InvalidToken,
    KeyId,
    TokenExpired,
    TokenRefusal,
    ZoneClaims,
    load_public_key,
    read_header,
    verify,
)
from projections import RevocationRow, zone_tagged
from xds_gateway.proxies.registration import dataplane_from_node
from xds_gateway.proxies.token_scope import dataplane_problem, needs_dataplane
from xds_gateway.resources.ingress import ZONE_INGRESS_NODE
from xds_gateway.resources.names import parse_node_id
from xds_gateway.server.callbacks import NoCallbacks, StreamInfo, StreamRefused
from xds_gateway.server.subscription import InvalidStream
from xds_gateway.view import ProjectionView

__all__ = ["AUTHORIZATION", "XDS_REFUSALS", "DataplaneAuthentication", "XdsRefusal", "token_of"]

_C = TypeVar("_C", DataplaneClaims, ZoneClaims)

log = logging.getLogger("meshlog.xds.auth")

AUTHORIZATION = "authorization"
"""The metadata key of the token (gRPC keys are lower case), as in Kuma."""
_BEARER = "bearer "
_UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
_DENIED = grpc.StatusCode.PERMISSION_DENIED


_StreamRefusal = Literal["no_token", "wrong_mesh", "wrong_dataplane", "tags_not_allowed",
                         "wrong_workload", "unknown_dataplane", "wrong_zone", "wrong_scope"]
XdsRefusal = TokenRefusal | _StreamRefusal
"""Why a proxy's token was refused: the token's own `TokenRefusal` (several `authorization`
values are `malformed`), `no_token`, or a valid token that does not open this stream: of
another mesh or Dataplane than the node's (also a later request naming another node), whose
tags or workload the Dataplane does not match, one that needs the Dataplane (tags, workload,
or no name) for a Dataplane neither carried nor registered (`unknown_dataplane`), a zone
token of another zone or without `ingress`."""

XDS_REFUSALS: Final[tuple[XdsRefusal, ...]] = (
    *get_args(TokenRefusal), *get_args(_StreamRefusal))

REFUSALS = Counter(
    "meshlog_xds_token_refusals_total",
    "xDS and HDS streams refused for their proxy's token, on open or while they lived "
    "(expired, revoked, key retired), by reason.", ["reason"])
for _reason in XDS_REFUSALS:
    REFUSALS.labels(_reason)  # each at 0 from the start: rate() sees the first one


class _TokenRefused(StreamRefused):
    """A refusal for the proxy's token, with its reason for the counter."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: XdsRefusal) -> None:
        super().__init__(code, message)
        self.reason: XdsRefusal = reason


def _refused(message: str, reason: XdsRefusal) -> StreamRefused:
    return _TokenRefused(_UNAUTHENTICATED, message, reason)


def _denied(message: str, reason: XdsRefusal) -> StreamRefused:
    return _TokenRefused(_DENIED, message, reason)


def _end(stream: StreamInfo, reason: XdsRefusal, message: str) -> None:
    """End a live stream for its token (UNAUTHENTICATED), counted unless it was ending."""
    if stream.ended is None:
        REFUSALS.labels(reason).inc()
    stream.end(_UNAUTHENTICATED, message)


def token_of(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """The token in a stream's metadata: one `authorization` value, raw or `Bearer <token>`.
    Raises `StreamRefused` (UNAUTHENTICATED) saying what is missing."""
    values = [value for key, value in metadata if key.lower() == AUTHORIZATION]
    if not values:
        raise _refused("no dataplane token: a proxy sends it in the `authorization` metadata "
                       "of its xDS stream (meshlog generate dataplane-token; meshlog dataplane "
                       "bootstrap --token-file)", "no_token")
    if len(values) > 1:
        raise _refused(f"the stream carries {len(values)} `authorization` values; send one "
                       "dataplane token", "malformed")
    value = values[0]
    token = (value.decode(errors="replace") if isinstance(value, bytes) else value).strip()
    if token[:len(_BEARER)].lower() == _BEARER:
        token = token[len(_BEARER):].strip()
    if not token:
        raise _refused("the `authorization` metadata is empty: send a dataplane token",
                       "no_token")
    return token


_KINDS: dict[str, str] = {DATAPLANE_TOKEN: "dataplane token", ZONE_TOKEN: "zone token"}


class _Session(Struct):
    node_id: str
    token: tuple[str, str]
    """(mesh or `_`, jti): what a revocation names."""
    kid: str
    """The signing key of its token: what a retirement names."""
    expiry: asyncio.TimerHandle


class DataplaneAuthentication(NoCallbacks):
    def __init__(self, view: ProjectionView, *, zone: str = DEFAULT_ZONE,
                 clock: Callable[[], float] = time.time) -> None:
        """`zone`: the gateway's zone, the only one whose zone tokens it accepts. `clock`:
        Unix seconds, what token times are compared with."""
        self._view = view
        self._zone = zone
        self._provenance = Provenance(zone="", origin="global") if zone == GLOBAL_ZONE else (
            Provenance(zone=zone, origin="zone"))
        """Who registers a Dataplane a node of this gateway carries: this gateway's zone."""
        self._clock = clock
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        """Public keys by their PEM, parsed once; which kids are in service is the view's."""
        self._sessions: dict[StreamInfo, _Session] = {}
        self._by_token: dict[tuple[str, str], set[StreamInfo]] = defaultdict(set)
        view.on_revoked(self._revoked)
        view.on_key_retired(self._key_retired)

    # --- StreamCallbacks ----------------------------------------------------------------------

    async def on_stream_open(self, stream: StreamInfo) -> None:
        try:
            await self._open(stream)
        except _TokenRefused as exc:
            REFUSALS.labels(exc.reason).inc()
            raise

    async def _open(self, stream: StreamInfo) -> None:
        node = stream.node if stream.node is not None else Node()
        parsed = parse_node_id(node.id)
        if parsed is None:
            raise StreamRefused(grpc.StatusCode.INVALID_ARGUMENT,
                                f"node.id {node.id!r} is not <mesh>.<dataplane name>")
        token = token_of(stream.metadata)
        claims: DataplaneClaims | ZoneClaims
        if parsed[0] == ZONE_INGRESS_NODE:
            kid, claims = self._authenticate_ingress(token, node.id)
            key, kind = ("_", claims.jti), "zone token"
        else:
            kid, claims = self._authenticate(token)
            self._authorize(claims, node, *parsed)
            key, kind = (claims.mesh, claims.jti), "dataplane token"
        # no await since the token was checked: a revocation cannot slip in between
        expiry = asyncio.get_running_loop().call_later(
            max(0.0, claims.exp - self._clock()), _end, stream, "expired",
            f"the {kind} {claims.jti} expired at {rfc3339(claims.exp * 1000)}")
        self._sessions[stream] = _Session(node_id=node.id, token=key, kid=str(kid),
                                          expiry=expiry)
        self._by_token[key].add(stream)

    async def on_stream_request(self, stream: StreamInfo, request: object) -> None:
        session = self._sessions.get(stream)
        node_id = _node_id_of(request)
        if session is not None and node_id and node_id != session.node_id:
            REFUSALS.labels("wrong_dataplane").inc()
            raise _denied(f"the stream was authenticated for node {session.node_id!r}; a "
                          f"request for {node_id!r} cannot change it: open a new stream",
                          "wrong_dataplane")

    async def on_stream_closed(self, stream: StreamInfo) -> None:
        session = self._sessions.pop(stream, None)
        if session is None:
            return
        session.expiry.cancel()
        streams = self._by_token.get(session.token)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self._by_token[session.token]

    # --- checks -------------------------------------------------------------------------------

    def _verified(self, token: str, purpose: str, claims_type: type[_C], what: str,
                  wrong_purpose: Callable[[KeyId], str], unknown_key: str
                  ) -> tuple[KeyId, _C]:
        """The key id and claims of `token`, a `what` signed with a `purpose` key, checked
        against the key the view holds and the clock; refused (UNAUTHENTICATED) otherwise."""
        try:
            kid = read_header(token)
            if kid.purpose != purpose:
                raise InvalidToken(wrong_purpose(kid), "wrong_kind")
            key = self._key(str(kid))
            if key is None:
                raise InvalidToken(f"its signing key {kid} is unknown to this gateway "
                                   f"({unknown_key})", "unknown_key")
            return kid, verify(token, key, claims_type, now_s=self._clock())
        except TokenExpired as exc:
            raise _refused(f"expired {what}: {exc}", exc.reason) from None
        except InvalidToken as exc:
            raise _refused(f"invalid {what}: {exc}", exc.reason) from None

    def _authenticate(self, token: str) -> tuple[KeyId, DataplaneClaims]:
        kid, claims = self._verified(
            token, DATAPLANE_TOKEN, DataplaneClaims, "dataplane token",
            lambda kid: (f"it is a {kid.purpose} (kid {kid}), not a dataplane token"
                         + (" (zone tokens are for zone ingresses)"
                            if kid.purpose == ZONE_TOKEN else "")),
            "a retired key or one that went with its deleted mesh, or a token of another "
            "control plane or of a log that was reset; or a key made a moment ago, not here "
            "yet")
        if claims.mesh != kid.mesh:
            raise _refused(f"invalid dataplane token: it names mesh {claims.mesh!r} but is "
                           f"signed with the key of mesh {kid.mesh!r}", "malformed")
        if (claims.mesh, claims.jti) in self._view.revocations:
            raise _refused(f"the dataplane token {claims.jti} was revoked", "revoked")
        return kid, claims

    def _authenticate_ingress(self, token: str, node_id: str) -> tuple[KeyId, ZoneClaims]:
        """A zone ingress's zone token: Kuma's zone token names no proxy, so any ingress of
        the zone it names may use it, and the zone must be this gateway's."""
        kid, claims = self._verified(
            token, ZONE_TOKEN, ZoneClaims, "zone token",
            lambda kid: (f"it is a {kid.purpose} (kid {kid}); a zone ingress authenticates "
                         "with a zone token (meshlog generate zone-token --zone ZONE --scope "
                         "ingress)"),
            "a retired key, or a token of another zone's control plane or of a log that was "
            "reset; or a key made a moment ago, not here yet: global's reach a zone through "
            "its link to global")
        if ("_", claims.jti) in self._view.revocations:
            raise _refused(f"the zone token {claims.jti} was revoked", "revoked")
        if claims.zone != self._zone:
            raise _denied(f"the zone token {claims.jti} is for zone {claims.zone!r}; this "
                          f"gateway serves zone {self._zone!r}: point the ingress at zone "
                          f"{claims.zone!r}'s xDS address", "wrong_zone")
        if "ingress" not in claims.scope:
            raise _denied(f"the zone token {claims.jti} has scope {claims.scope}, not "
                          f"ingress: it opens no stream for the zone ingress {node_id!r}",
                          "wrong_scope")
        return kid, claims

    def _authorize(self, claims: DataplaneClaims, node: Node, mesh: str, name: str) -> None:
        """The token allows the node's Dataplane (`token_scope`: Kuma's rule)."""
        if claims.mesh != mesh or (claims.name and claims.name != name):
            whom = (f"{claims.mesh}.{claims.name}" if claims.name else
                    f"any Dataplane of mesh {claims.mesh!r} it allows")
            raise _denied(f"the dataplane token {claims.jti} is for {whom}, not for node "
                          f"{node.id!r}",
                          "wrong_mesh" if claims.mesh != mesh else "wrong_dataplane")
        if not needs_dataplane(claims):
            return
        dataplanes = self._dataplanes(node, mesh, name)
        if not dataplanes:
            wants = ([f"tags {claims.tags}"] if claims.tags else []) + (
                [f"workload {claims.workload!r}"] if claims.workload else [])
            what = f"requires {' and '.join(wants)}" if wants else "names no Dataplane"
            raise _denied(f"the dataplane token {claims.jti} {what} and Dataplane "
                          f"{mesh}.{name} is not registered (register it, or carry it in the "
                          "node metadata)", "unknown_dataplane")
        for which, dataplane in dataplanes:
            problem = dataplane_problem(claims, dataplane)
            if problem is not None:
                reason, text = problem
                raise _denied(f"the dataplane token {claims.jti} does not allow Dataplane "
                              f"{mesh}.{name}{which}: {text}", reason)

    def _dataplanes(self, node: Node, mesh: str, name: str) -> list[tuple[str, Dataplane]]:
        """What the token must allow: the Dataplane the node carries to register itself, as
        the fold will make it (tagged with this zone), and the one registered under its name
        (folded, tagged already), each that exists. Both, where Kuma checks only the carried
        one: a registration through the API is kept over the carried copy (and one by another
        proxy replaced by it), so a token for one service that carries a Dataplane named like
        another service's would otherwise be served that one's config and certificate."""
        try:
            carried = dataplane_from_node(node, mesh, name)
        except InvalidStream as exc:
            raise StreamRefused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        found: list[tuple[str, Dataplane]] = []
        if carried is not None:
            found.append(("", msgspec.structs.replace(
                carried, networking=zone_tagged(carried.networking, self._provenance))))
        row = self._view.dataplanes.get((mesh, name))
        if row is not None:
            found.append((" as registered" if found else "", row.dataplane))
        return found

    def _key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        """The public key of `kid` while the view holds it: the row of a retired key, or of
        a key of a deleted mesh, is gone."""
        row = self._view.signing_keys.get(kid)
        if row is None:
            return None
        key = self._keys.get(row.public_key)
        if key is None:
            key = self._keys[row.public_key] = load_public_key(row.public_key)
        return key

    def _key_retired(self, kid: str) -> None:
        for stream, session in list(self._sessions.items()):
            if session.kid == kid:
                _end(stream, "unknown_key", f"the signing key {kid} of its token "
                     f"{session.token[1]} was retired (or went with its mesh)")

    def _revoked(self, row: RevocationRow) -> None:
        kind = _KINDS.get(row.purpose)
        if kind is None:
            return
        for stream in list(self._by_token.get((row.mesh or "_", row.jti), ())):
            _end(stream, "revoked", f"the {kind} {row.jti} was revoked")


def _node_id_of(request: object) -> str:
    """The node id a later request names, if it names one (`set_node_on_first_message_only`
    leaves it out)."""
    if isinstance(request, HealthCheckRequestOrEndpointHealthResponse):
        if request.HasField("health_check_request"):
            return str(request.health_check_request.node.id)
        return ""
    node = getattr(request, "node", None)
    return str(node.id) if node is not None else ""
