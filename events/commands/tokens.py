"""Token commands: the signing keys the log records, tokens signed with them, revocations.

- `signing_key(purpose, mesh)`: the newest key of (purpose, mesh) recorded in the log, its
  private half opened with the control plane's secret key (`events.commands.signing_keys`).
  Serial 1 is created on first use, with expected subject sequence 0: two API replicas racing
  create it once (the loser's append is a conflict; it reads again and takes the winner's
  key), and a restart finds it again (Kuma re-made keys kept in memory on a restart, and every
  token failed: kuma#3762). The user-token key is made when the API starts. A mesh's
  dataplane-token key is made at its first dataplane token rather than with the mesh: a Mesh
  write stays one append on one subject (the command path never writes two subjects as one),
  and a mesh whose proxies use no tokens (`--no-auth`) never holds a key.
- A mesh's keys and revocations go with the Mesh, as Kuma deletes its mesh secrets: a Mesh
  deleted and created again signs with a new key (the next serial, made at its first token),
  and the tokens of its earlier life are refused (their kid names a key the read models no
  longer hold). Which life is current comes from the log (`events.commands.meshes.MeshLives`).
- `rotate_signing_key`, `retire_signing_key`: Kuma's rotation. The next serial signs from
  its creation on (on every replica: each checks before it signs that no newer serial
  exists); tokens of older serials verify until their key is retired, which refuses them
  all. The newest serial cannot be retired.
- `issue_dataplane_token`, `issue_zone_token`, `issue_user_token`: claims signed with the
  newest key. A token is not recorded: only its revocation is.
- A zone token (Kuma's, for a zone ingress) is signed on global, as Kuma does: global's API
  signs one for any zone registered in its log (`ZoneApplied`), with global's own `zone-token`
  key (made at its first zone token; kid `_global/zone-token/_/<serial>`,
  `events.identity.key_id`). That key's event, its retirement and global's revocations of
  zone tokens reach every zone's log through the sync of global's subjects, and each zone's
  fold keeps them beside its own (`projections.fold`), so a zone's gateways verify them. A
  zone of a multi-zone deployment signs none and makes no `zone-token` key (Kuma's zone
  control plane holds only what verifies them): `issue_zone_token` and a rotation of its
  zone-token key are a `WrongControlPlane` naming global's command. A key a zone made with
  an earlier release stays in its log and its read models: its tokens verify until they
  expire or that key is retired (the newest too: it signs nothing there), and the zone still
  revokes them. A standalone control
  plane (no global) signs zone tokens of its own zone, as Kuma's single-zone one does.
- `revoke`: `TokenRevoked` on the token's own subject; revoking it again appends nothing.
"""

from __future__ import annotations

from events.commands.handler import Append, CommandHandler, Current, Decision, Keep, current_of
from events.commands.meshes import MeshLives
from events.commands.resources import Deployment
from events.commands.signing_keys import OpenedKey, Rotated, SigningKeys, sealing_purpose
from events.commands.zones import zones_filter
from events.errors import InvalidResource, NotFound, Violation, WrongControlPlane
from events.event_types import TokenPurpose, TokenRevoked, ZoneApplied
from events.identity.sealing import SecretKey
from events.identity.tokens import (
    DATAPLANE_TOKEN,
    USER_TOKEN,
    ZONE_TOKEN,
    ZONE_TOKEN_SCOPES,
    DataplaneClaims,
    SigningKey,
    UserClaims,
    ZoneClaims,
    dataplane_claims,
    is_token_id,
    user_claims,
    zone_claims,
)
from events.log import EventLog
from events.subjects import GLOBAL_ZONE, revocation_subject

__all__ = ["OpenedKey", "Rotated", "TokenCommands", "sealing_purpose", "signs_here"]

_RETRIES = 1
"""A conflict on a revocation's subject means another replica wrote it: read it once more."""


def signs_here(purpose: TokenPurpose, deployment: Deployment) -> bool:
    """Whether a control plane of `deployment` signs tokens of `purpose` with its own keys:
    every purpose but zone tokens on a zone of a multi-zone deployment (Kuma's rule: global
    signs those)."""
    return not (purpose == ZONE_TOKEN and deployment == "zone")


class TokenCommands:
    def __init__(self, log: EventLog | CommandHandler, *, zone: str,
                 secret_key: SecretKey, deployment: Deployment = "standalone") -> None:
        """`deployment`: a zone of a multi-zone deployment signs no zone tokens (global
        does)."""
        self.handler = CommandHandler.of(log)
        self._zone = zone
        self.deployment = deployment
        self._keys = SigningKeys(self.handler, zone=zone, secret_key=secret_key)
        self._meshes = MeshLives(self.handler, zone=zone)

    async def signing_key(self, purpose: TokenPurpose, mesh: str | None, at: int
                          ) -> SigningKey:
        """The key that signs `purpose` tokens (of `mesh`; None for user and zone tokens)
        now, created if the log has none (for a mesh: none since the Mesh was last created).
        Raises `NotFound` for a dataplane-token key of a mesh that does not exist,
        `SealedSecretError` if this control plane's secret key is not the one that sealed
        it, `EventLogUnavailable` without the log."""
        return await self._keys.newest(purpose, mesh, at, since=await self._since(purpose, mesh))

    def opened_key(self, kid: str) -> OpenedKey | None:
        """The key `kid` if this process made or opened it, with the sequence it was created
        at (the API verifies its own tokens with it before the projector has folded it)."""
        return self._keys.opened(kid)

    async def rotate_signing_key(self, purpose: TokenPurpose, mesh: str | None, at: int
                                 ) -> Rotated:
        """Create the next signing key of `purpose` (of `mesh`), which signs every token
        from now on. Raises `NotFound` for a dataplane-token key of a mesh that does not
        exist, `InvalidResource` for a mesh given to a key that belongs to none,
        `WrongControlPlane` for the zone-token key on a zone (global's signs there)."""
        _check_scope(purpose, mesh, "signing key")
        if purpose == ZONE_TOKEN:
            self._check_zone_token_issuer("rotate global's key there (`meshlog --api <global "
                                          "API> signing-key rotate zone-token`)")
        await self._since(purpose, mesh)
        return await self._keys.rotate(purpose, mesh, at)

    async def retire_signing_key(self, purpose: TokenPurpose, mesh: str | None, serial: int,
                                 at: int) -> tuple[int, bool]:
        """Retire the signing key `serial` of `purpose` (of `mesh`): every token it signed is
        refused from now on. (the sequence that says so, whether this call appended it).
        Raises `NotFound` for a serial the log never held or one that went with its mesh,
        `Conflict` for the newest one, unless it signs nothing: a zone's own zone-token keys
        (made by an earlier release) may all be retired, global's sign there."""
        _check_scope(purpose, mesh, "signing key")
        since = await self._since(purpose, mesh, "the signing keys of a deleted mesh went "
                                                 "with it")
        return await self._keys.retire(purpose, mesh, serial, at, since=since,
                                       newest_signs=signs_here(purpose, self.deployment))

    async def _since(self, purpose: TokenPurpose, mesh: str | None,
                     missing: str = "create it before its tokens") -> int:
        """Where the keys of (purpose, mesh) begin in the log: for a dataplane token, at the
        current life of its Mesh (`NotFound`, saying `missing`, without one); 0 for the
        others."""
        if purpose != DATAPLANE_TOKEN or mesh is None:
            return 0
        life = await self._meshes.current(mesh)
        if life is None:
            raise NotFound(f"mesh {mesh!r} does not exist: {missing}")
        return life.began

    # --- issuing ----------------------------------------------------------------------------

    async def issue_dataplane_token(self, *, mesh: str, name: str, tags: dict[str, list[str]],
                                    valid_for_s: int, now_ms: int, workload: str = ""
                                    ) -> tuple[str, DataplaneClaims]:
        """A token for the Dataplane `mesh`.`name` (which need not exist yet: a proxy may
        register itself with it), or with `name` empty for any Dataplane of `mesh` that
        `tags` and `workload` allow (Kuma's token for a group of Dataplanes; none of them:
        the whole mesh). Raises `NotFound` without the mesh."""
        key = await self.signing_key(DATAPLANE_TOKEN, mesh, now_ms)
        claims = dataplane_claims(mesh=mesh, name=name, tags=tags, valid_for_s=valid_for_s,
                                  now_s=now_ms // 1000, workload=workload)
        return key.sign(claims), claims

    async def issue_zone_token(self, *, zone: str, scope: list[str], valid_for_s: int,
                               now_ms: int) -> tuple[str, ZoneClaims]:
        """A zone token for the proxies of `zone` acting in `scope` (Kuma's
        `generate zone-token`). On global, `zone` must be a zone registered in its log; on a
        standalone control plane, its own zone. Raises `InvalidResource` naming the zone
        otherwise, or an unknown scope; `WrongControlPlane` on a zone of a multi-zone
        deployment (global signs them)."""
        self._check_zone_token_issuer(f"generate it there (`meshlog --api <global API> "
                                      f"generate zone-token --zone {zone}`, POST /tokens/zone "
                                      "on global's API)")
        out = []
        if self._zone == GLOBAL_ZONE:
            zones = await self._registered_zones()
            if zone not in zones:
                out.append(Violation("zone", f"{zone!r} is not a zone registered on global "
                                             f"(registered: {', '.join(zones) or 'none'}); a "
                                             "zone registers when its control plane first "
                                             "connects (meshlog up --zone NAME --global URL)"))
        elif zone != self._zone:
            out.append(Violation("zone", f"{zone!r} is not this control plane's zone "
                                         f"({self._zone!r}): a standalone control plane signs "
                                         "zone tokens of its own zone only (in a multi-zone "
                                         "deployment, global's API signs them for every "
                                         "registered zone)"))
        for i, item in enumerate(scope):
            if item not in ZONE_TOKEN_SCOPES:
                out.append(Violation(f"scope[{i}]", f"{item!r} is not a scope (one of "
                                                    f"{', '.join(ZONE_TOKEN_SCOPES)})"))
        if not scope:
            out.append(Violation("scope", "lists no scope (ingress)"))
        if out:
            raise InvalidResource("zone token request", out)
        key = await self.signing_key(ZONE_TOKEN, None, now_ms)
        claims = zone_claims(zone=zone, scope=scope, valid_for_s=valid_for_s,
                             now_s=now_ms // 1000)
        return key.sign(claims), claims

    def _check_zone_token_issuer(self, there: str) -> None:
        """Kuma's rule: in a multi-zone deployment only global signs zone tokens (a zone's
        control plane holds only what verifies them), so a zone refuses, saying `there`:
        what to run on global instead."""
        if not signs_here(ZONE_TOKEN, self.deployment):
            raise WrongControlPlane(
                "zone-token", f"zone tokens are issued by the global control plane, not by "
                f"zone {self._zone!r}: {there}; global's zone-token key reaches this zone "
                "through the sync, and this zone's gateways verify its tokens")

    async def _registered_zones(self) -> list[str]:
        """The zones global's log holds a registration of (disabled ones too: a disabled zone
        still runs its ingresses once enabled again), sorted."""
        zones = []
        for record in await self.handler.log.latest(zones_filter()):
            event = current_of(record).event
            if isinstance(event, ZoneApplied):
                zones.append(event.name)
        return sorted(zones)

    async def issue_user_token(self, *, name: str, groups: list[str], valid_for_s: int,
                               now_ms: int) -> tuple[str, UserClaims]:
        key = await self.signing_key(USER_TOKEN, None, now_ms)
        claims = user_claims(name=name, groups=groups, valid_for_s=valid_for_s,
                             now_s=now_ms // 1000)
        return key.sign(claims), claims

    # --- revoking ---------------------------------------------------------------------------

    async def is_revoked(self, mesh: str | None, jti: str) -> bool:
        """Whether the log holds a revocation of the token `jti` (of `mesh`)."""
        current = await self.handler.current(revocation_subject(mesh, jti, self._zone))
        return isinstance(current.event, TokenRevoked)

    async def revoke(self, purpose: TokenPurpose, mesh: str | None, jti: str, *,
                     expires_at_ms: int, at: int) -> tuple[int, bool]:
        """Record that the token `jti` is revoked: (the sequence that says so, whether this
        call appended it). Raises `InvalidResource` for a jti that is no token id."""
        if not is_token_id(jti):
            raise InvalidResource("revocation", [Violation(
                "jti", f"{jti!r} is not a token id (a UUID, the token's `jti` claim)")])
        _check_scope(purpose, mesh, "revocation")
        subject = revocation_subject(mesh, jti, self._zone)

        def decide(current: Current) -> Decision:
            if isinstance(current.event, TokenRevoked):
                return Keep()
            return Append(TokenRevoked(at=at, purpose=purpose, mesh=mesh, jti=jti,
                                       expires_at=expires_at_ms))

        outcome = await self.handler.execute(subject, decide, retries=_RETRIES)
        return outcome.seq, outcome.appended and not outcome.duplicate


def _check_scope(purpose: TokenPurpose, mesh: str | None, what: str) -> None:
    """A dataplane token belongs to a mesh; user and zone tokens to none."""
    if purpose in (USER_TOKEN, ZONE_TOKEN) and mesh is not None:
        raise InvalidResource(what, [Violation("mesh", f"a {purpose} belongs to no mesh")])
    if purpose == DATAPLANE_TOKEN and mesh is None:
        raise InvalidResource(what, [Violation("mesh", f"a {purpose} belongs to a mesh: "
                                                       "name it")])
