"""Token commands: the signing keys the log records, tokens signed with them, revocations.

- `signing_key(purpose, mesh)`: the newest key of (purpose, mesh) recorded in the log, its
  private half opened with the control plane's secret key. Serial 1 is created on first use,
  with expected subject sequence 0: two API replicas racing create it once (the loser's append
  is a conflict; it reads again and takes the winner's key), and a restart finds it again
  (Kuma re-made keys kept in memory on a restart, and every token failed: kuma#3762).
  The user-token key is made when the API starts. A mesh's dataplane-token key is made at its
  first dataplane token rather than with the mesh: a Mesh write stays one append on one
  subject (the command path never writes two subjects as one), and a mesh whose proxies use
  no tokens (`--no-auth`) never holds a key.
- `issue_dataplane_token`, `issue_zone_token`, `issue_user_token`: claims signed with that
  key. A token is not recorded: only its revocation is.
- A zone token (Kuma's, for a zone ingress) is signed with this control plane's own
  `zone-token` key, made at the first zone token. Kuma signs zone tokens on global, whose key
  reaches the zones; meshlog's signing keys stay in the log of the control plane that made them
  (projections.fold: local only), so a zone signs the tokens of its own ingresses, and only
  those: a token for another zone would be refused by every gateway that could verify it.
- `revoke`: `TokenRevoked` on the token's own subject; revoking it again appends nothing.
"""

from __future__ import annotations

import logging

from events.commands.handler import Append, CommandHandler, Current, Decision, Keep, current_of
from events.commands.meshes import current_mesh
from events.errors import InvalidResource, NotFound, UndecodableEvent, Violation
from events.event_types import MeshApplied, SigningKeyCreated, TokenPurpose, TokenRevoked
from events.identity.sealing import SecretKey
from events.identity.tokens import (
    DATAPLANE_TOKEN,
    USER_TOKEN,
    ZONE_TOKEN,
    ZONE_TOKEN_SCOPES,
    DataplaneClaims,
    KeyId,
    SigningKey,
    UserClaims,
    ZoneClaims,
    dataplane_claims,
    generate_key_pair,
    is_token_id,
    load_private_key,
    user_claims,
    zone_claims,
)
from events.log import EventLog
from events.subjects import (
    revocation_subject,
    signing_key_subject,
    signing_keys_filter,
)

__all__ = ["TokenCommands", "sealing_purpose"]

log = logging.getLogger("meshlog.tokens")

_RETRIES = 1
"""A conflict on a key's subject means another replica created it: read it once more."""


def sealing_purpose(kid: KeyId) -> str:
    """The associated data a signing key's private half is sealed with: a blob copied to
    another key's event does not open."""
    return f"signingkey:{kid}"


class TokenCommands:
    def __init__(self, log: EventLog | CommandHandler, *, zone: str,
                 secret_key: SecretKey) -> None:
        self.handler = CommandHandler.of(log)
        self._zone = zone
        self._secret = secret_key
        self._keys: dict[tuple[TokenPurpose, str | None], SigningKey] = {}
        """Opened keys: a key never changes, and only a new serial (none is made yet) would
        take over from it."""

    async def signing_key(self, purpose: TokenPurpose, mesh: str | None, at: int
                          ) -> SigningKey:
        """The key that signs `purpose` tokens (of `mesh`; None for user tokens), created if
        the log has none. Raises `SealedSecretError` if this control plane's secret key is
        not the one that sealed it, `EventLogUnavailable` without the log."""
        cached = self._keys.get((purpose, mesh))
        if cached is not None:
            return cached
        created = await self._newest(purpose, mesh) or await self._create(purpose, mesh, at)
        kid = KeyId(purpose=purpose, mesh=mesh, serial=created.serial)
        private = self._secret.open(created.private_key, purpose=sealing_purpose(kid))
        key = SigningKey(kid, load_private_key(private))
        self._keys[(purpose, mesh)] = key
        return key

    def known_keys(self) -> list[SigningKey]:
        """The keys opened so far (the API verifies its own tokens with them before the
        projector has folded a new key)."""
        return list(self._keys.values())

    async def _newest(self, purpose: TokenPurpose, mesh: str | None) -> SigningKeyCreated | None:
        records = await self.handler.log.latest(signing_keys_filter(mesh, self._zone))
        keys = [event for event in (current_of(r).event for r in records)
                if isinstance(event, SigningKeyCreated) and event.purpose == purpose
                and event.mesh == mesh]
        return max(keys, key=lambda event: event.serial, default=None)

    async def _create(self, purpose: TokenPurpose, mesh: str | None, at: int
                      ) -> SigningKeyCreated:
        kid = KeyId(purpose=purpose, mesh=mesh, serial=1)
        subject = signing_key_subject(purpose, mesh, kid.serial, self._zone)
        private, public = generate_key_pair()
        event = SigningKeyCreated(at=at, purpose=purpose, mesh=mesh, serial=kid.serial,
                                  public_key=public, private_key=self._secret.seal(
                                      private, purpose=sealing_purpose(kid)))

        def decide(current: Current) -> Decision:
            return Append(event) if current.seq == 0 else Keep()

        outcome = await self.handler.execute(subject, decide, retries=_RETRIES)
        if outcome.appended:
            log.info("created the signing key %s", kid)
            return event
        existing = outcome.previous.event
        if not isinstance(existing, SigningKeyCreated):
            raise UndecodableEvent(outcome.previous.seq, subject,
                                   "not a signing key this code can read")
        return existing

    # --- issuing ----------------------------------------------------------------------------

    async def issue_dataplane_token(self, *, mesh: str, name: str, tags: dict[str, list[str]],
                                    valid_for_s: int, now_ms: int) -> tuple[str, DataplaneClaims]:
        """A token for the Dataplane `mesh`.`name` (which need not exist yet: a proxy may
        register itself with it). Raises `NotFound` without the mesh."""
        mesh_event = (await current_mesh(self.handler, mesh, self._zone)).event
        if not isinstance(mesh_event, MeshApplied):
            raise NotFound(f"mesh {mesh!r} does not exist: create it before its tokens")
        key = await self.signing_key(DATAPLANE_TOKEN, mesh, now_ms)
        claims = dataplane_claims(mesh=mesh, name=name, tags=tags, valid_for_s=valid_for_s,
                                  now_s=now_ms // 1000)
        return key.sign(claims), claims

    async def issue_zone_token(self, *, zone: str, scope: list[str], valid_for_s: int,
                               now_ms: int) -> tuple[str, ZoneClaims]:
        """A zone token for the proxies of `zone` acting in `scope` (Kuma's
        `generate zone-token`). Raises `InvalidResource` for another zone than this control
        plane's (its gateways alone hold the key that verifies it) or an unknown scope."""
        out = []
        if zone != self._zone:
            out.append(Violation("zone", f"{zone!r} is not this control plane's zone "
                                         f"({self._zone!r}): a zone's own API signs the zone "
                                         "tokens of its ingresses"))
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
        if purpose in (USER_TOKEN, ZONE_TOKEN) and mesh is not None:
            raise InvalidResource("revocation", [Violation(
                "mesh", f"a {purpose} belongs to no mesh")])
        subject = revocation_subject(mesh, jti, self._zone)

        def decide(current: Current) -> Decision:
            if isinstance(current.event, TokenRevoked):
                return Keep()
            return Append(TokenRevoked(at=at, purpose=purpose, mesh=mesh, jti=jti,
                                       expires_at=expires_at_ms))

        outcome = await self.handler.execute(subject, decide, retries=_RETRIES)
        return outcome.seq, outcome.appended and not outcome.duplicate
